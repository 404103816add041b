"""Which Optuna sampler finds the proxy-vs-latency front fastest, in trials and in wall-clock seconds?

Each run is a real search (`nas.search.run_search`, a sqlite study) on the a100 target (latencies estimated from
the shipped block costs) with two objectives (proxy up, latency_ms down) and the budget as a constraint, for
random, TPE (multivariate, constant liar), NSGA-II (population sized to the trials) and GP, three seeds each, up
to 10,000 trials or `--cap` seconds, whichever comes first. The proxy is ``params`` (a lookup, exact: the
comparison is about the samplers, not proxy noise). The budget is the median predicted latency of 40 random
architectures, so about half the space is feasible.

Reported per sampler (mean over seeds): the hypervolume after 100, 300, 1,000, 3,000 and 10,000 trials and after
10, 30, 60 and 120 s of search, the best feasible proxy found after those trial counts (as a fraction of the
largest any run found: what a single-objective search keeps), and the time a trial took (median gap between
completions) as the study grew: a sampler whose cost grows with the history shows it there. Hypervolume: of the feasible trials, in the box
latency in [0, budget] ms x proxy in [0, the largest proxy any run found], as a fraction of that box.

    python benchmarks/sampler_efficiency.py [--trials 10000] [--cap 150] [--cache runs.json]
        -> benchmarks/results/sampler-efficiency.json
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import optuna  # noqa: E402

from benchmarks._io import write_json_atomic  # noqa: E402
from latency_tables import open_table  # noqa: E402
from latency_tables.targets import current_device_string, get_target  # noqa: E402
from nas.config import SearchConfig  # noqa: E402
from nas.search import run_search  # noqa: E402
from search_spaces import sample_archs  # noqa: E402

RESULTS = ROOT / "benchmarks/results"
SAMPLERS = ("random", "tpe", "nsga2", "gp")
SEEDS = (0, 1, 2)
TRIAL_CHECKPOINTS = (100, 300, 1000, 3000, 10000)
SECOND_CHECKPOINTS = (10, 30, 60, 120)
COST_WINDOWS = ((0, 100), (100, 300), (300, 1000), (1000, 3000), (3000, 10000))


def hypervolume(points: list[tuple[float, float]], budget_ms: float, proxy_max: float) -> float:
    """2-D hypervolume of (latency_ms, proxy) points (latency down, proxy up) as a fraction of the reference box."""
    front, best = [], 0.0
    for latency_ms, proxy in sorted(points):
        if proxy > best:
            front.append((latency_ms, proxy))
            best = proxy
    volume = 0.0
    for i, (latency_ms, proxy) in enumerate(front):
        next_latency = front[i + 1][0] if i + 1 < len(front) else budget_ms
        volume += (next_latency - latency_ms) * proxy
    return volume / (budget_ms * proxy_max)


def _run(folder: Path, sampler: str, seed: int, trials: int, cap_s: float, budget_ms: float) -> list[tuple]:
    """``(number, seconds since the search started, latency_ms, proxy or None, completed)`` of every trial."""
    config = SearchConfig(target="a100", budget_ms=budget_ms, trials=trials, sampler=sampler, objective="pareto",
                          proxy="params", seed=seed, top_k=0, export=False, timeout_s=cap_s,
                          study=f"{sampler}-{seed}", out=folder / f"{sampler}-{seed}")
    summary = run_search(config, progress=False)
    stored = optuna.load_study(study_name=config.study, storage=summary.storage).get_trials(deepcopy=False)
    start = min(t.datetime_start for t in stored)
    return [(t.number, (t.datetime_complete - start).total_seconds(), t.user_attrs["latency_ms"],
             t.values[0] if t.values else None) for t in stored if t.datetime_complete is not None]


def _trial_cost_ms(rows: list[tuple]) -> dict[str, float]:
    """Median gap between consecutive completions (ms), per window of trial numbers."""
    done = sorted(seconds for _, seconds, _, _ in rows)
    out = {}
    for low, high in COST_WINDOWS:
        gaps = [1000 * (b - a) for a, b in zip(done[low:high], done[low + 1:high])]
        if len(gaps) >= 10:
            out[f"{low}-{high}"] = statistics.median(gaps)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=max(TRIAL_CHECKPOINTS))
    parser.add_argument("--cap", type=float, default=150.0, help="seconds a run may take (default 150)")
    parser.add_argument("--samplers", nargs="+", default=list(SAMPLERS))
    parser.add_argument("--out", type=Path, default=RESULTS / "sampler-efficiency.json")
    parser.add_argument("--cache", type=Path, help="JSON file keeping each finished run's trials, so a rerun after a "
                        "failure runs only the missing ones (default: none)")
    args = parser.parse_args(argv)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    table = open_table("a100", create=False)
    budget_ms = statistics.median(table.predict(spec).latency_ms for spec in sample_archs(40, 1234))
    rows: dict[tuple[str, int], list[tuple]] = {}
    cached = json.loads(args.cache.read_text()) if args.cache and args.cache.exists() else {}
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        for sampler in args.samplers:
            for seed in SEEDS:
                key = f"{sampler}-{seed}-{args.trials}-{args.cap:g}-{budget_ms:.6f}"
                if key not in cached:
                    cached[key] = _run(Path(tmp), sampler, seed, args.trials, args.cap, budget_ms)
                    if args.cache:
                        write_json_atomic(args.cache, cached)
                rows[(sampler, seed)] = [tuple(row) for row in cached[key]]
                print(f"{sampler} seed {seed}: {len(rows[(sampler, seed)])} trials", flush=True)
    proxy_max = max(p for run in rows.values() for _, _, _, p in run if p is not None)
    runs = []
    for (sampler, seed), run in rows.items():
        feasible = [(n, s, lat, p) for n, s, lat, p in run if p is not None and lat <= budget_ms]
        by_trials = {str(n): hypervolume([(lat, p) for number, _, lat, p in feasible if number < n], budget_ms,
                                         proxy_max) for n in TRIAL_CHECKPOINTS if n <= len(run)}
        by_seconds = {str(t): hypervolume([(lat, p) for _, s, lat, p in feasible if s <= t], budget_ms, proxy_max)
                      for t in SECOND_CHECKPOINTS}
        best_by_trials = {str(n): max((p for number, _, _, p in feasible if number < n), default=0.0) / proxy_max
                          for n in TRIAL_CHECKPOINTS if n <= len(run)}
        runs.append({"sampler": sampler, "seed": seed, "trials": len(run), "seconds": max(s for _, s, _, _ in run),
                     "hypervolume_by_trials": by_trials, "hypervolume_by_seconds": by_seconds,
                     "best_by_trials": best_by_trials,
                     "trial_ms": _trial_cost_ms(run)})
    summary = {}
    for sampler in args.samplers:
        mine = [r for r in runs if r["sampler"] == sampler]

        def mean_of(key: str) -> dict:
            keys = set.intersection(*(set(r[key]) for r in mine))
            return {k: statistics.mean(r[key][k] for r in mine) for k in sorted(keys, key=lambda k: int(
                k.split("-")[0]))}
        summary[sampler] = {"trials_reached": statistics.mean(r["trials"] for r in mine),
                            "hypervolume_by_trials": mean_of("hypervolume_by_trials"),
                            "hypervolume_by_seconds": mean_of("hypervolume_by_seconds"),
                            "best_by_trials": mean_of("best_by_trials"),
                            "trial_ms": mean_of("trial_ms")}
    result = {"device": current_device_string(get_target("cpu")), "target": "a100", "budget_ms": budget_ms,
              "proxy": "params", "objectives": ["params (max)", "latency_ms (min)"], "seeds": list(SEEDS),
              "trials": args.trials, "cap_s": args.cap, "samplers": summary, "runs": runs,
              "seconds": round(time.perf_counter() - started, 1), "date": time.strftime("%Y-%m-%d")}
    write_json_atomic(args.out, result)
    for sampler, row in summary.items():
        print(sampler, {k: round(v, 3) for k, v in row["hypervolume_by_trials"].items()},
              {f"{k}s": round(v, 3) for k, v in row["hypervolume_by_seconds"].items()},
              {k: round(v, 1) for k, v in row["trial_ms"].items()})
    print(f"-> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
