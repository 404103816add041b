"""How long does the README's first command take, end to end, as the trial count grows?

Runs ``python launch.py --target a100 --budget 5ms --trials N`` as a user would (a fresh process, the data-free
default proxy, exports included but not their ``model.onnx``, whose cost does not grow with N: README, "ONNX";
each N in a fresh output folder) and times it from process start to the
summary written, for each N. Also reads the summary's own loop timing. Then opens the largest study in
``launch.py dashboard`` and times optuna-dashboard's API answering for it (``/api/studies/<id>``: every trial),
first and second request.

    python benchmarks/search_throughput.py [--trials 100 1000 10000]   -> benchmarks/results/search-throughput.json
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks._io import write_json_atomic  # noqa: E402
from latency_tables.targets import current_device_string, get_target  # noqa: E402

RESULTS = ROOT / "benchmarks/results"
COMMAND = ["launch.py", "--target", "a100", "--budget", "5ms"]
GOAL_S = {"10000": 120.0}


def run(trials: int, folder: Path) -> dict:
    """One end-to-end run of the README's command with `trials` trials."""
    out = folder / f"n{trials}"
    command = [sys.executable, *COMMAND, "--trials", str(trials), "--out", str(out), "--quiet", "--no-onnx"]
    started = time.perf_counter()
    subprocess.run(command, cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - started
    summary = json.loads((out / "summary.json").read_text())
    return {"trials": trials, "wall_s": round(wall, 2), "ms_per_trial": round(1000 * wall / trials, 3),
            "sampler": summary["sampler"], "proxy": summary["proxy"], "loop_s": summary["timing"].get("loop_s"),
            "lookup_s": summary["timing"].get("lookup_s"), "search_s": summary["seconds"],
            "exports": len(summary["exports"]), "feasible": summary["trials"]["feasible"],
            "duplicates": summary["trials"]["duplicates"], "over_budget": summary["trials"]["over_budget"]}


def dashboard_seconds(out: Path, study: str) -> dict:
    """Start ``launch.py dashboard`` on the study in `out` and time its API's first and second full answer."""
    import socket
    import urllib.request

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    started = time.perf_counter()
    server = subprocess.Popen([sys.executable, "launch.py", "dashboard", "--study", study, "--storage",
                               f"sqlite:///{out / 'study.db'}", "--port", str(port)], cwd=ROOT,
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        line = server.stdout.readline()  # "optuna-dashboard for study ...: http://127.0.0.1:PORT/dashboard/studies/N"
        study_id = int(line.rstrip().rsplit("/", 1)[-1])
        url = f"http://127.0.0.1:{port}/api/studies/{study_id}"
        times, trials = [], None
        while len(times) < 2:
            try:
                request_started = time.perf_counter()
                with urllib.request.urlopen(url, timeout=600) as answer:
                    trials = len(json.loads(answer.read())["trials"])
                times.append(time.perf_counter() - request_started)
            except OSError:  # not listening yet
                if time.perf_counter() - started > 600:
                    raise
                time.sleep(0.2)
        return {"trials": trials, "first_answer_s": round(times[0], 2), "second_answer_s": round(times[1], 2),
                "start_to_first_answer_s": round(time.perf_counter() - started - times[1], 2)}
    finally:
        server.terminate()
        server.wait(timeout=30)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, nargs="+", default=[100, 1000, 10000])
    parser.add_argument("--out", type=Path, default=RESULTS / "search-throughput.json")
    args = parser.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for trials in args.trials:
            rows.append(run(trials, Path(tmp)))
            print(rows[-1], flush=True)
        largest = max(args.trials)
        study = json.loads((Path(tmp) / f"n{largest}" / "summary.json").read_text())["study"]
        dashboard = dashboard_seconds(Path(tmp) / f"n{largest}", study)
        print("dashboard", dashboard, flush=True)
    result = {"device": current_device_string(get_target("cpu")), "command": "python " + " ".join(COMMAND),
              "runs": rows, "dashboard": dashboard, "goal_wall_s": GOAL_S, "date": time.strftime("%Y-%m-%d")}
    write_json_atomic(args.out, result)
    print(" | ".join(f"{r['trials']} trials: {r['wall_s']:.1f} s" for r in rows) + f" -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
