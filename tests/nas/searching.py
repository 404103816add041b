"""What the search tests share: the target and resolution they search at, a config and the stored study of it,
and the check of the printed trial count, and stopping a process group a test started."""
from __future__ import annotations

import contextlib
import os
import signal
import statistics
import subprocess
import time
from pathlib import Path

import optuna

from latency_tables import open_table
from nas.config import SearchConfig
from nas.summary import SearchSummary
from search_spaces import sample_archs

ROOT = Path(__file__).resolve().parents[2]
TARGET, RESOLUTION = "a100", 64  # estimated latencies (no table needed); 64x64 keeps block tracing fast


def median_budget_ms() -> float:
    """The median predicted latency of 15 sampled architectures: a budget about half of them fit."""
    table = open_table(TARGET, resolution=RESOLUTION, create=False)
    return statistics.median(table.predict(spec).latency_ms for spec in sample_archs(15, 0))


def search_config(tmp_path: Path, budget_ms: float, **fields) -> SearchConfig:
    return SearchConfig(**{"target": TARGET, "budget_ms": budget_ms, "resolution": RESOLUTION, "trials": 8,
                           "workers": 2, "proxy": "synflow", "sampler": "random", "out": tmp_path, "top_k": 2,
                           "onnx": False, **fields})  # ONNX: tests/nas/test_onnx_export.py, and end to end


def stored_study(config: SearchConfig) -> optuna.Study:
    config = config.resolved()
    return optuna.load_study(study_name=config.study, storage=config.storage)


def assert_trials_line_sums(summary: SearchSummary) -> None:
    """The printed ``trials: N — a x, b y, ...``: the parts sum to N, each trial in one part."""
    total, parts = summary.trials_line().removeprefix("trials: ").split(" — ")
    assert sum(int(part.split()[0]) for part in parts.split(", ")) == int(total) == summary.trials["total"]
    if summary.trials["interrupted"]:
        assert f"{summary.trials['interrupted']} interrupted (run again on resume)" in parts


def stop_group(head: subprocess.Popen) -> None:
    """Stop the Ray head and every process it started (they share its process group), by their PIDs."""
    def members() -> list[str]:  # live processes of the group (zombies are already dead)
        pids = subprocess.run(["pgrep", "-g", str(head.pid)], capture_output=True, text=True).stdout.split()
        return [pid for pid in pids if _state(pid) not in ("Z", "X", None)]

    with contextlib.suppress(ProcessLookupError):
        os.killpg(head.pid, signal.SIGTERM)
    deadline = time.monotonic() + 20
    while members() and time.monotonic() < deadline:
        time.sleep(0.5)
    if members():
        with contextlib.suppress(ProcessLookupError):
            os.killpg(head.pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while members() and time.monotonic() < deadline:
            time.sleep(0.2)
    head.wait(timeout=10)
    assert not members(), "ray processes left running"


def _state(pid: str) -> str | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return None
