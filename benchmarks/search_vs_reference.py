"""Does the search's pick beat the hand-designed backbones that fit the same budget? Trained, on this machine.

Target ``cpu`` (this machine; the search's latency table measured at 32 px), CIFAR scale: 32x32 images, the
``cifar`` space and the CIFAR-scale members of the reference families (`search_spaces.CIFAR_REFERENCE_ARCHS`,
scaling documented there). Steps, each resumable from ``benchmarks/results/search-vs-reference.jsonl`` (one row
per timing, search and training):

1. ``latency``: every reference timed end to end here (median of passes over the list).
2. Budgets: the measured latency of a small reference (``shvit_cifar``) and of the slowest (``l2vit_cifar``),
   under which every reference fits.
3. ``search``: per budget, the search a user would run: ``launch.py --target cpu --resolution 32 --space cifar
   --budget B --data <CIFAR subset>`` with the default data proxy; its best two architectures by its own ranking
   (feasible, highest proxy first) are chosen before anything is trained.
4. ``train``: the picks and every reference whose measured latency fits the budget, trained with the proxy
   benchmark's fixed recipe (`benchmarks.proxy_quality.TRAINED_RECIPE`) from seeds 0 and 1.
5. ``time``: the picks and the references timed end to end here in the same passes (with no training running:
   run this step alone); the budgets and the report use these latest timings.

    python benchmarks/search_vs_reference.py --step latency|search|train|time|report
        -> benchmarks/results/search-vs-reference.json (per budget: every network's accuracy mean and spread,
           measured ms, and the gap between the search's best and the best reference under the budget)
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from benchmarks._io import write_json_atomic  # noqa: E402
from benchmarks.proxy_quality import DATA, TRAINED_RECIPE, train_accuracy  # noqa: E402
from latency_tables import open_table  # noqa: E402
from latency_tables.measure import time_networks  # noqa: E402
from nas.config import DEFAULT_PROXY_WITH_DATA  # noqa: E402
from search_spaces import CIFAR_REFERENCE_ARCHS, ArchSpec  # noqa: E402

RESULTS = ROOT / "benchmarks/results"
ROWS = RESULTS / "search-vs-reference.jsonl"
TABLE = RESULTS / "search-vs-reference-cpu.sqlite"  # measured here: launch.py measure --target cpu --resolution 32
# --space cifar --networks 40 --latency-db benchmarks/results/search-vs-reference-cpu.sqlite
OUT = RESULTS / "search-vs-reference.json"
RESOLUTION = 32
BUDGET_REFERENCES = ("shvit_cifar", "l2vit_cifar")  # small; large (the slowest: every reference fits)
SEEDS = (0, 1)
PICKS = 2
LATENCY_PASSES = 5
SEARCH_TRIALS = 100


def read_rows(path: Path | None = None) -> list[dict]:
    """Every stored row of `path` (default `ROWS`; a damaged last line, from a kill mid-write, is dropped)."""
    path = path or ROWS
    if not path.exists():
        return []
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return rows


def append_row(row: dict, path: Path | None = None) -> None:
    with (path or ROWS).open("a") as handle:  # one line per finished step: a stop loses at most the one running
        handle.write(json.dumps(row) + "\n")


def measured_ms(rows: list[dict]) -> dict[str, float]:
    """digest -> the latest end-to-end timing of it."""
    return {r["digest"]: r["ms"] for r in rows if r["kind"] == "latency"}


def time_specs(specs: dict[str, ArchSpec], rows: list[dict], role: str | dict[str, str], again: bool = False) -> None:
    """Time the `specs` not timed yet (`again`: all of them), end to end, `LATENCY_PASSES` passes over the list
    (median); `role` per name or for all. The latest timing of a network is the one the report uses."""
    todo = {name: spec for name, spec in specs.items() if again or spec.digest() not in measured_ms(rows)}
    if not todo:
        return
    table = open_table("cpu", db=TABLE, resolution=RESOLUTION, create=False)
    times = time_networks(list(todo.values()), table.settings, table.torch_device, LATENCY_PASSES)
    for (name, spec), ms in zip(todo.items(), times):
        row = {"kind": "latency", "name": name, "role": role if isinstance(role, str) else role[name],
               "digest": spec.digest(), "ms": ms,
               "passes": LATENCY_PASSES, "date": time.strftime("%Y-%m-%d %H:%M")}
        append_row(row)
        rows.append(row)
        print(f"{name:<24} {ms:8.3f} ms end to end", flush=True)


def budgets(rows: list[dict]) -> dict[str, float]:
    """Budget name -> ms: the measured latencies of the budget references."""
    times = measured_ms(rows)
    return {name: times[CIFAR_REFERENCE_ARCHS[name].digest()] for name in BUDGET_REFERENCES}


def run_search(budget_name: str, budget_ms: float, out: Path, proxy: str) -> list[dict]:
    """The search a user would run at `budget_ms` (the default data proxy, `proxy`); its best `PICKS` architectures
    by its own ranking."""
    from nas.study import load_study
    from nas.trial_record import records
    study_name = f"cifar-vs-{budget_name}-{proxy}"
    command = [sys.executable, str(ROOT / "launch.py"), "--target", "cpu", "--resolution", str(RESOLUTION),
               "--space", "cifar", "--latency-db", str(TABLE), "--budget", f"{budget_ms:.4f}ms", "--data", str(DATA),
               "--trials",
               str(SEARCH_TRIALS), "--study", study_name, "--out", str(out), "--no-export", "--quiet"]
    started = time.perf_counter()
    subprocess.run(command, check=True, cwd=ROOT)
    seconds = time.perf_counter() - started
    study = load_study(study_name, f"sqlite:///{out / 'study.db'}")
    if study.user_attrs["proxy"] != proxy:
        raise RuntimeError(f"the search ran with proxy {study.user_attrs['proxy']}, not the default {proxy}")
    feasible = sorted((r for r in records(study) if r.feasible and r.duplicate_of is None),
                      key=lambda r: (-r.proxy, r.latency_ms))
    return [{"kind": "pick", "budget": budget_name, "budget_ms": budget_ms, "rank": rank, "trial": r.number,
             "proxy": study.user_attrs["proxy"], "proxy_value": r.proxy, "predicted_ms": r.latency_ms,
             "digest": r.spec.digest(), "spec": r.spec.to_dict(), "command": " ".join(command[1:]),
             "search_seconds": round(seconds, 1)} for rank, r in enumerate(feasible[:PICKS])]


def pick_name(row: dict) -> str:
    """A pick's name: its rank, budget and (for every proxy after the first default, meco) its proxy."""
    return f"pick{row['rank']}_{row['budget']}" + ("" if row["proxy"] == "meco" else f"_{row['proxy']}")


def candidates(rows: list[dict]) -> dict[str, dict[str, ArchSpec]]:
    """Budget -> {name: spec} to train: the picks (of every default proxy the search has had), then every reference
    whose measured latency fits."""
    times, out = measured_ms(rows), {}
    for budget_name, budget_ms in budgets(rows).items():
        chosen = {pick_name(r): ArchSpec.from_dict(r["spec"]) for r in rows
                  if r["kind"] == "pick" and r["budget"] == budget_name}
        chosen.update({name: spec for name, spec in CIFAR_REFERENCE_ARCHS.items() if times[spec.digest()] <= budget_ms})
        out[budget_name] = chosen
    return out


def train_all(rows: list[dict]) -> None:
    """Train every candidate of every budget from every seed once (an architecture shared by budgets, once)."""
    from nas.data import load_data
    data = load_data(DATA)
    done = {(r["digest"], r["seed"]) for r in rows if r["kind"] == "training"}
    unique = {spec.digest(): (name, spec) for group in candidates(rows).values() for name, spec in group.items()}
    for seed in SEEDS:
        for digest, (name, spec) in unique.items():
            if (digest, seed) in done:
                continue
            accuracy, seconds = train_accuracy(spec, data, seed)
            row = {"kind": "training", "name": name, "digest": digest, "seed": seed, "accuracy": accuracy,
                   "seconds": round(seconds, 1), "recipe": TRAINED_RECIPE.__dict__}
            append_row(row)
            rows.append(row)
            print(f"{name:<24} seed {seed}: top-1 {accuracy:.3f} ({seconds:.0f} s)", flush=True)


def report(rows: list[dict]) -> dict:
    """Per budget: each network's accuracy (mean of its seeds, half their range), measured ms, and the gap."""
    times = measured_ms(rows)
    accuracy: dict[str, list[float]] = {}
    for r in rows:
        if r["kind"] == "training":
            accuracy.setdefault(r["digest"], []).append(r["accuracy"])
    result: dict = {"resolution": RESOLUTION, "seeds": list(SEEDS), "recipe": TRAINED_RECIPE.__dict__,
                    "budgets": {}, "date": time.strftime("%Y-%m-%d")}
    picks = {pick_name(r): r for r in rows if r["kind"] == "pick"}
    for budget_name, group in candidates(rows).items():
        budget_ms = budgets(rows)[budget_name]
        networks = []
        for name, spec in group.items():
            values = accuracy.get(spec.digest(), [])
            pick = picks.get(name)
            networks.append({"name": name, "role": "search" if pick else "reference",
                             "proxy": pick["proxy"] if pick else None,
                             "digest": spec.digest(), "accuracies": values,
                             "accuracy_mean": statistics.mean(values) if values else None,
                             "half_range": (max(values) - min(values)) / 2 if len(values) > 1 else None,
                             "measured_ms": times.get(spec.digest()),
                             "predicted_ms": pick["predicted_ms"] if pick else None,
                             "within_budget": (times[spec.digest()] <= budget_ms) if spec.digest() in times else None})
        trained = [n for n in networks if n["accuracy_mean"] is not None and len(n["accuracies"]) == len(SEEDS)]
        reference = max((n for n in trained if n["role"] == "reference"), key=lambda n: n["accuracy_mean"],
                        default=None)
        by_proxy = {}
        for proxy in dict.fromkeys(n["proxy"] for n in networks if n["proxy"]):
            best = max((n for n in trained if n["proxy"] == proxy), key=lambda n: n["accuracy_mean"], default=None)
            gap = best["accuracy_mean"] - reference["accuracy_mean"] if best and reference else None
            by_proxy[proxy] = {"best_search": best["name"] if best else None,
                               "gap_points": None if gap is None else 100 * gap,
                               "goal_met": bool(gap is not None and gap >= 0.01 and best["within_budget"])}
        current = by_proxy.get(DEFAULT_PROXY_WITH_DATA, {"best_search": None, "gap_points": None, "goal_met": False})
        result["budgets"][budget_name] = {
            "budget_ms": budget_ms, "networks": networks, "default_proxy": DEFAULT_PROXY_WITH_DATA, **current,
            "best_reference": reference["name"] if reference else None, "by_proxy": by_proxy}
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--step", choices=("latency", "search", "train", "time", "report"), required=True)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs", type=Path, default=Path("/tmp/search-vs-reference"),
                        help="where the searches keep their studies")
    args = parser.parse_args(argv)
    if not DATA.exists():
        print(f"error: {DATA} not found (the shared CIFAR-10 subset)", file=sys.stderr)
        return 2
    torch.set_num_threads(args.threads)
    rows = read_rows()
    if args.step == "latency":
        time_specs(dict(CIFAR_REFERENCE_ARCHS), rows, "reference")
    elif args.step == "search":
        for budget_name, budget_ms in budgets(rows).items():
            if any(r["kind"] == "pick" and r["budget"] == budget_name and r["proxy"] == DEFAULT_PROXY_WITH_DATA
                   for r in rows):
                continue
            out = args.runs / f"{budget_name}-{DEFAULT_PROXY_WITH_DATA}"
            for row in run_search(budget_name, budget_ms, out, DEFAULT_PROXY_WITH_DATA):
                append_row(row)
                print(f"{budget_name}: pick {row['rank']} trial {row['trial']} {row['proxy']} "
                      f"{row['proxy_value']:.4g}, predicted {row['predicted_ms']:.3f} ms", flush=True)
    elif args.step == "train":
        train_all(rows)
    elif args.step == "time":  # the picks and every reference again, in the same passes: one machine state
        picks = {pick_name(r): ArchSpec.from_dict(r["spec"]) for r in rows if r["kind"] == "pick"}
        roles = {**{name: "reference" for name in CIFAR_REFERENCE_ARCHS}, **{name: "search" for name in picks}}
        time_specs({**CIFAR_REFERENCE_ARCHS, **picks}, rows, roles, again=True)
    result = report(rows)
    write_json_atomic(OUT, result)
    for budget_name, entry in result["budgets"].items():
        for proxy, best in entry["by_proxy"].items():
            print(f"budget {budget_name} ({entry['budget_ms']:.3f} ms), searched with {proxy}: best search "
                  f"{best['best_search']}, best reference {entry['best_reference']}, gap {best['gap_points']} points")
    return 0


if __name__ == "__main__":
    sys.exit(main())
