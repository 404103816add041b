"""Bad input and faults, as a new user meets them: every case must answer with one line on stderr and exit 2
(or the stated status), in seconds, leave no traceback, and write nothing it should not.

Each case runs ``python launch.py ...`` as a subprocess in a fresh folder (its `runs/`, files and env of its own),
and records the exit status, the stderr lines, whether a traceback was printed, the seconds it took, and the
files it left in that folder and in the project's shipped table folder (`latency_tables/data`). A case passes
when its status is the expected one, stderr has no traceback and at most `MAX_ERROR_LINES` lines, and no file
outside the case's `allowed` ones appeared.

    python benchmarks/bad_input_battery.py [--only NAME ...]   -> benchmarks/results/bad-input-battery.json
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks._io import write_json_atomic  # noqa: E402

RESULT = ROOT / "benchmarks" / "results" / "bad-input-battery.json"
SHIPPED = ROOT / "latency_tables" / "data"
MAX_ERROR_LINES = 2  # the error, and at most one line of hint
CASE_TIMEOUT_S = 120


@dataclass(frozen=True)
class Case:
    """One command: `argv` after ``launch.py`` (``{dir}`` is the case's folder); `setup(folder)` writes its inputs;
    `expect` is the exit status; `allowed` are paths (relative to the folder) it may leave."""
    name: str
    argv: tuple[str, ...]
    setup: Callable[[Path], None] = lambda folder: None
    expect: int = 2
    allowed: tuple[str, ...] = ()
    env: dict = field(default_factory=dict)


def _valid_spec(folder: Path) -> None:
    from search_spaces import TINY_ARCHS
    (folder / "spec.json").write_text(TINY_ARCHS["tiny_conv"].to_json())


def _write(name: str, data: bytes) -> Callable[[Path], None]:
    return lambda folder: (folder / name).write_bytes(data)


def _npz(label: int) -> Callable[[Path], None]:
    def setup(folder: Path) -> None:
        x = np.zeros((20, 8, 8, 3), dtype=np.uint8)
        y = np.array([0, 1] * 9 + [label, 1], dtype=np.int64)
        np.savez(folder / "data.npz", x_train=x, y_train=y, x_test=x, y_test=y)
    return setup


def _file(name: str) -> Callable[[Path], None]:
    return _write(name, b"not a folder")


def _damaged_db(folder: Path) -> None:
    (folder / "table.sqlite").write_bytes(b"SQLite format 3\x00" + os.urandom(3000))


SEARCH = ("--target", "cpu", "--budget", "20ms", "--trials", "2", "--quiet", "--no-onnx")
CASES = (
    # 1. sizes the space cannot build
    *(Case(f"{cmd}-resolution-100000", (cmd, *args, "--resolution", "100000"), setup)
      for cmd, args, setup in (("check", ("spec.json",), _valid_spec), ("archs", (), lambda f: None),
                               ("costs", (), lambda f: None), ("latency", ("spec.json", "--target", "cpu"),
                                                                _valid_spec))),
    Case("search-resolution-100000", (*SEARCH, "--resolution", "100000")),
    Case("search-resolution-7", (*SEARCH, "--resolution", "7")),
    # 2. --out that cannot be a folder
    Case("search-out-is-a-file", (*SEARCH, "--out", "{dir}/taken"), _file("taken"), allowed=("taken",)),
    Case("search-out-under-a-file", (*SEARCH, "--out", "{dir}/taken/run"), _file("taken"), allowed=("taken",)),
    Case("search-out-unwritable", (*SEARCH, "--out", "/proc/hnas-run")),
    Case("export-out-is-a-file", ("export", "--study", "s", "--out", "{dir}/taken"), _file("taken"),
         allowed=("taken",)),
    # 3. a table without entries for the settings
    Case("search-cpu-bf16", (*SEARCH, "--dtype", "bf16")),
    Case("search-cpu-batch-8", (*SEARCH, "--batch", "8")),
    Case("latency-cpu-fp16", ("latency", "spec.json", "--target", "cpu", "--dtype", "fp16"), _valid_spec,
         allowed=("spec.json",)),
    # 4. a damaged latency DB
    Case("latency-damaged-db", ("latency", "spec.json", "--target", "cpu", "--latency-db", "{dir}/table.sqlite"),
         lambda f: (_valid_spec(f), _damaged_db(f)), allowed=("spec.json", "table.sqlite")),
    # 5, 6. spec files
    Case("check-not-utf8", ("check", "{dir}/bad.json"), _write("bad.json", b"\xff\xfe{"), allowed=("bad.json",)),
    Case("check-nested-array", ("check", "{dir}/deep.json"), _write("deep.json", b"[" * 100000 + b"]" * 100000),
         allowed=("deep.json",)),
    Case("check-not-json", ("check", "{dir}/x.json"), _write("x.json", b"{nope"), allowed=("x.json",)),
    Case("check-missing-file", ("check", "{dir}/missing.json")),
    # 7. measure's correction networks
    Case("measure-networks-2", ("measure", "--target", "cpu", "--networks", "2", "--latency-db", "{dir}/t.sqlite")),
    # 8. labels
    Case("search-npz-label-2**62", (*SEARCH, "--data", "{dir}/data.npz", "--proxy", "meco"), _npz(2**62),
         allowed=("data.npz",)),
    Case("search-npz-label-10**6", (*SEARCH, "--data", "{dir}/data.npz", "--proxy", "meco"), _npz(10**6),
         allowed=("data.npz",)),
    # hang: nothing listening
    Case("search-ray-address-nothing-listening", (*SEARCH, "--proxy", "synflow", "--ray-address", "127.0.0.1:1")),
    # files written by commands that fail or should not write
    Case("search-storage-is-the-latency-table", (*SEARCH, "--storage", f"sqlite:///{SHIPPED / 'cpu.sqlite'}")),
    Case("measure-a100-here", ("measure", "--target", "a100", "--latency-db", "{dir}/a100.sqlite")),
    Case("latency-db-folder-missing", ("latency", "spec.json", "--target", "cpu", "--latency-db",
                                       "{dir}/no/such/t.sqlite"), _valid_spec, allowed=("spec.json",)),
    Case("search-workers-1000", (*SEARCH, "--workers", "1000")),
    # bad flags and names
    Case("search-budget-without-unit", ("--target", "cpu", "--budget", "5")),
    Case("search-trials-0", (*SEARCH[:4], "--trials", "0")),
    Case("search-unknown-sampler", (*SEARCH, "--sampler", "annealing")),
    Case("search-unknown-proxy", (*SEARCH, "--proxy", "accuracy")),
    Case("search-unknown-target", ("--target", "tpu9", "--budget", "5ms")),
    Case("search-data-missing", (*SEARCH, "--data", "{dir}/nothing")),
    Case("search-space-file-missing", (*SEARCH, "--space", "{dir}/space.json")),
    Case("search-space-unknown-mixer", (*SEARCH, "--space", "{dir}/space.json"),
         _write("space.json", b'{"base": "cifar", "mixers": ["conv", "mamba"]}'), allowed=("space.json",)),
    Case("unknown-command", ("train",)),
    Case("export-unknown-study", ("export", "--study", "nothing-here")),
    Case("dashboard-port-0", ("dashboard", "--study", "s", "--port", "0")),
    Case("calibrate-missing-csv", ("calibrate", "--benchmarks", "{dir}/none.csv", "--target", "a100")),
    Case("calibrate-garbage-csv", ("calibrate", "--benchmarks", "{dir}/g.csv", "--target", "a100"),
         _write("g.csv", b"a,b\n1,2\n"), allowed=("g.csv",)),
    Case("calibrate-cpu", ("calibrate", "--benchmarks", "{dir}/g.csv", "--target", "cpu"),
         _write("g.csv", b"a,b\n1,2\n"), allowed=("g.csv",)),
    Case("archs-unknown-name", ("archs", "--names", "resnet50")),
    Case("kernels-env-unknown", ("latency", "spec.json", "--target", "cpu"), _valid_spec,
         allowed=("spec.json",), env={"HYBRID_NAS_KERNELS": "cuda-please"}),
)


def _snapshot(*folders: Path) -> set[str]:
    return {str(path) for folder in folders if folder.exists() for path in folder.rglob("*")}


def run_case(case: Case) -> dict:
    with tempfile.TemporaryDirectory(prefix="hnas-battery-") as tmp:
        folder = Path(tmp)
        case.setup(folder)
        before = _snapshot(folder, SHIPPED)
        argv = [sys.executable, str(ROOT / "launch.py"), *(a.replace("{dir}", tmp) for a in case.argv)]
        env = {**os.environ, "PYTHONPATH": str(ROOT), **case.env}
        start = time.perf_counter()
        try:
            done = subprocess.run(argv, cwd=folder, env=env, capture_output=True, text=True,
                                  timeout=CASE_TIMEOUT_S)
            status, stderr = done.returncode, done.stderr
        except subprocess.TimeoutExpired as expired:
            status, stderr = "timeout", (expired.stderr or b"").decode(errors="replace") \
                if isinstance(expired.stderr, bytes) else (expired.stderr or "")
        seconds = time.perf_counter() - start
        allowed = {str(folder / path) for path in case.allowed}
        left = sorted(p.replace(tmp, "{dir}") for p in _snapshot(folder, SHIPPED) - before - allowed)
    lines = [line for line in stderr.splitlines() if line.strip()]
    ok = status == case.expect and "Traceback" not in stderr and len(lines) <= MAX_ERROR_LINES and not left
    return {"case": case.name, "argv": list(case.argv), "expected": case.expect, "status": status,
            "seconds": round(seconds, 2), "traceback": "Traceback" in stderr, "stderr": lines[-MAX_ERROR_LINES - 3:],
            "left": left, "ok": ok}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", nargs="+", help="run only these cases")
    args = parser.parse_args()
    cases = [c for c in CASES if not args.only or c.name in args.only]
    rows = []
    for case in cases:
        row = run_case(case)
        rows.append(row)
        print(f"{'ok ' if row['ok'] else 'BAD'} {row['status']!s:>7} {row['seconds']:6.1f} s  {case.name}: "
              f"{(row['stderr'] or [''])[-1][:110]}", flush=True)
    bad = [row["case"] for row in rows if not row["ok"]]
    summary = {"cases": len(rows), "ok": len(rows) - len(bad), "bad": bad,
               "tracebacks": sum(row["traceback"] for row in rows),
               "max_seconds": max(row["seconds"] for row in rows),
               "median_seconds": float(np.median([row["seconds"] for row in rows]))}
    if not args.only:
        write_json_atomic(RESULT, {"machine": platform.node(), "date": time.strftime("%Y-%m-%d"), **summary,
                                   "rows": rows})
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
