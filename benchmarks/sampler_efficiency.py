"""Which Optuna sampler finds the proxy-vs-latency front fastest? Hypervolume after 100 and 300 trials.

Each run is a real search (`nas.search.run_search`, Ray workers, sqlite study) on the cpu target's table with two
objectives (proxy up, latency_ms down) and the budget as a constraint, for random, TPE and NSGA-II, three seeds
each. The proxy is ``params`` (zero-cost and exact, so the comparison is about the samplers, not proxy noise).
The budget is the median predicted latency of 40 random architectures, so about half the space is feasible.

Hypervolume: of the feasible trials among the first N, in the box latency in [0, budget] ms x proxy in
[0, the largest proxy any run found], as a fraction of that box (1.0 would be a single network at 0 ms with the
largest proxy).

    python benchmarks/sampler_efficiency.py [--trials 300]   -> benchmarks/results/sampler-efficiency.json
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("RAY_AUTH_MODE", "disabled")

import optuna  # noqa: E402
import torch  # noqa: E402

from benchmarks._io import write_json_atomic  # noqa: E402
from latency_tables import open_table  # noqa: E402
from latency_tables.targets import current_device_string, get_target  # noqa: E402
from nas.config import SearchConfig  # noqa: E402
from nas.evaluate import EvalRequest, Outcome  # noqa: E402
from nas.search import ray_session, run_search  # noqa: E402
from search_spaces import ArchSpec, build_model, sample_archs  # noqa: E402

RESULTS = ROOT / "benchmarks/results"
SAMPLERS = ("random", "tpe", "nsga2")
SEEDS = (0, 1, 2)
CHECKPOINTS = (100, 300)


def params_proxy(request: EvalRequest, data: object = None) -> Outcome:
    """The ``params`` proxy alone (no FLOP count), to keep 2,700 trials within minutes."""
    torch.set_num_threads(1)
    started = time.perf_counter()
    params = sum(p.numel() for p in build_model(ArchSpec.from_json(request.spec_json)).parameters())
    return Outcome(ok=True, value=float(params), params=params, flops=0, seconds=time.perf_counter() - started,
                   proxy_seconds=time.perf_counter() - started, worker=str(os.getpid()))


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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=max(CHECKPOINTS))
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", type=Path, default=RESULTS / "sampler-efficiency.json")
    args = parser.parse_args(argv)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    table = open_table("cpu", create=False)
    budget_ms = statistics.median(table.predict(spec).latency_ms for spec in sample_archs(40, 1234))
    points: dict[tuple[str, int], list[tuple[int, float, float]]] = {}
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp, ray_session(None, args.workers):
        for sampler in SAMPLERS:
            for seed in SEEDS:
                config = SearchConfig(target="cpu", budget_ms=budget_ms, trials=args.trials, workers=args.workers,
                                      sampler=sampler, objective="pareto", proxy="params", seed=seed, top_k=0,
                                      export=False, study=f"{sampler}-{seed}", out=Path(tmp) / f"{sampler}-{seed}")
                summary = run_search(config, evaluator=params_proxy, progress=False)
                trials = optuna.load_study(study_name=config.study, storage=summary.storage).get_trials()
                points[(sampler, seed)] = [(t.number, t.user_attrs["latency_ms"], t.values[0]) for t in trials
                                           if t.values is not None]
                print(f"{sampler} seed {seed}: {summary.trials}", flush=True)
    proxy_max = max(p for rows in points.values() for _, _, p in rows)
    runs, table_rows = [], {}
    for (sampler, seed), rows in points.items():
        volumes = {str(n): hypervolume([(lat, p) for number, lat, p in rows if number < n], budget_ms, proxy_max)
                   for n in CHECKPOINTS if n <= args.trials}
        runs.append({"sampler": sampler, "seed": seed, "hypervolume": volumes, "feasible": len(rows)})
    for sampler in SAMPLERS:
        mine = [r for r in runs if r["sampler"] == sampler]
        table_rows[sampler] = {n: {"mean": statistics.mean(r["hypervolume"][n] for r in mine),
                                   "per_seed": [r["hypervolume"][n] for r in mine]} for n in runs[0]["hypervolume"]}
    result = {"device": current_device_string(get_target("cpu")), "target": "cpu", "budget_ms": budget_ms,
              "proxy": "params", "objectives": ["params (max)", "latency_ms (min)"], "seeds": list(SEEDS),
              "trials": args.trials, "hypervolume": table_rows, "runs": runs,
              "seconds": round(time.perf_counter() - started, 1), "date": time.strftime("%Y-%m-%d")}
    write_json_atomic(args.out, result)
    for sampler, row in table_rows.items():
        print(sampler, {n: round(v["mean"], 4) for n, v in row.items()})
    print(f"-> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
