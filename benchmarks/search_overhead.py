"""What does the search loop itself cost per trial? Driver (ask, sample, lookups, tell) + Ray + storage.

Runs `nas.search.run_search` on the a100 target (estimated latencies from the shipped block costs) with a sqlite
study per run, after a warm-up search that fills the lookups' caches:

- a trivial Ray-evaluated proxy (the architecture's JSON length: no network is built) for 1 and 2 workers: what
  a costly proxy's search adds around its evaluations;
- the lookup proxy ``params`` (no Ray at all: every trial settles in the driver).

The per-trial overhead is the time between consecutive trial completions as the storage recorded them (median),
and the mean of the driver loop per trial, with the lookups' share. For comparison, the same trivial objective
through Ray Tune's Tuner with OptunaSearch (``reuse_actors=True``) in the same run, with the same Optuna sampler
(`nas.study.make_sampler`) and as many trials. The sampler is the default for the trial count
(`nas.config.auto_sampler`).

    python benchmarks/search_overhead.py [--trials 200] [--tune-trials N]   -> benchmarks/results/search-overhead.json
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
from latency_tables.targets import current_device_string, get_target  # noqa: E402
from nas.config import SearchConfig, auto_sampler  # noqa: E402
from nas.evaluate import EvalRequest, Outcome  # noqa: E402
from nas.ray_session import ray_session  # noqa: E402
from nas.search import run_search  # noqa: E402
from nas.study import make_sampler  # noqa: E402
from search_spaces import sample_arch  # noqa: E402

RESULTS = ROOT / "benchmarks/results"


def trivial_proxy(request: EvalRequest, data: object = None) -> Outcome:
    """A proxy that costs nothing: the length of the architecture's JSON."""
    return Outcome(ok=True, value=float(len(request.spec_json)), params=0, flops=0, worker=str(os.getpid()))


def tune_space(trial: optuna.Trial) -> None:
    """The search space, define-by-run, as OptunaSearch takes it."""
    sample_arch(trial)


def tune_objective(config: dict) -> dict:
    """The trivial proxy as a Tune function trainable."""
    return {"proxy": float(len(str(config)))}


def _completion_gaps_ms(storage: str, study: str) -> list[float]:
    trials = optuna.load_study(study_name=study, storage=storage).get_trials(deepcopy=False)
    done = sorted(t.datetime_complete for t in trials if t.datetime_complete is not None)
    return [(b - a).total_seconds() * 1000 for a, b in zip(done, done[1:])]


def _search(folder: Path, name: str, trials: int, workers: int, seed: int, proxy: str) -> dict:
    config = SearchConfig(target="a100", budget_ms=1e6, trials=trials, workers=workers, proxy=proxy,
                          study=name, out=folder / name, top_k=0, export=False, seed=seed)
    summary = run_search(config, evaluator=trivial_proxy, progress=False)
    gaps = _completion_gaps_ms(summary.storage, name)
    timing = summary.timing
    return {"proxy": proxy, "sampler": summary.sampler, "workers": workers, "trials": trials,
            "median_overhead_ms": statistics.median(gaps),
            "p90_overhead_ms": statistics.quantiles(gaps, n=10)[-1],
            "mean_loop_ms_per_trial": 1000 * timing["loop_s"] / timing["trials_run"],
            "mean_lookup_ms_per_trial": 1000 * timing["lookup_s"] / timing["trials_run"],
            "mean_orchestration_ms_per_trial": 1000 * (timing["loop_s"] - timing["lookup_s"]) / timing["trials_run"]}


def _tune(folder: Path, trials: int, workers: int, seed: int) -> dict:
    from ray import tune
    from ray.tune.search.optuna import OptunaSearch

    completions: list[float] = []

    class Clock(tune.Callback):
        def on_trial_complete(self, iteration, trials, trial, **info):
            completions.append(time.perf_counter())

    sampler = make_sampler(auto_sampler(trials), seed, "best", trials)
    searcher = OptunaSearch(space=tune_space, metric="proxy", mode="max", sampler=sampler)
    tuner = tune.Tuner(tune_objective, tune_config=tune.TuneConfig(search_alg=searcher, num_samples=trials,
                                                              max_concurrent_trials=workers, reuse_actors=True),
                       run_config=tune.RunConfig(storage_path=str(folder / "tune"), verbose=0, callbacks=[Clock()]))
    started = time.perf_counter()
    tuner.fit()
    wall = time.perf_counter() - started
    gaps = [1000 * (b - a) for a, b in zip(completions, completions[1:])]
    return {"workers": workers, "trials": trials, "median_overhead_ms": statistics.median(gaps),
            "mean_ms_per_trial": 1000 * wall / trials}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=200)
    parser.add_argument("--tune-trials", type=int, help="trials of the Ray Tune runs (default: --trials)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=RESULTS / "search-overhead.json")
    args = parser.parse_args(argv)
    args.tune_trials = args.tune_trials or args.trials
    torch.set_num_threads(1)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    rows, tune_rows = [], []
    with tempfile.TemporaryDirectory() as tmp, ray_session(None, 2):
        folder = Path(tmp)
        _search(folder, "warmup", args.trials, 2, args.seed + 100, "synflow")  # fills caches, starts workers
        for workers in (1, 2):
            rows.append(_search(folder, f"w{workers}", args.trials, workers, args.seed, "synflow"))
            print(rows[-1], flush=True)
        lookup = _search(folder, "lookup", args.trials, 2, args.seed, "params")
        print(lookup, flush=True)
        for workers in (1, 2):
            tune_rows.append(_tune(folder, args.tune_trials, workers, args.seed))
            print("tune", tune_rows[-1], flush=True)
    ours = {str(r["workers"]): r["median_overhead_ms"] for r in rows}
    theirs = {str(r["workers"]): r["median_overhead_ms"] for r in tune_rows}
    result = {"device": current_device_string(get_target("cpu")), "storage": "sqlite (file, WAL)",
              "trials": args.trials, "median_overhead_ms": ours, "tune_median_overhead_ms": theirs,
              "tune_over_ours": {w: theirs[w] / ours[w] for w in ours}, "runs": rows, "tune_runs": tune_rows,
              "lookup_proxy": lookup, "lookup_median_overhead_ms": lookup["median_overhead_ms"],
              "goal_median_overhead_ms": 10.0, "date": time.strftime("%Y-%m-%d")}
    write_json_atomic(args.out, result)
    print(f"median per-trial overhead: ours {ours} ms, Ray Tune + OptunaSearch {theirs} ms; lookup proxy "
          f"{lookup['median_overhead_ms']:.2f} ms -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
