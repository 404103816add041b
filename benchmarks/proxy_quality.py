"""Which accuracy proxy ranks this space's architectures like their trained accuracy?

Samples architectures from the CIFAR-scale space, trains each with one fixed recipe on the CIFAR-10 subset
(``TRAINED_RECIPE``: 1500 steps of batch 128 = ~38 epochs of the 5,000 training images, AdamW 2e-3, warmup +
cosine, label smoothing 0.1, crop + flip; top-1 on the 1,000 test images), scores each with every proxy, and
reports Spearman and Kendall of every proxy against the trained accuracy with the proxies' run times. Results per
architecture are cached (one JSON line each) so a stopped run resumes.

AZ-NAS (Lee & Ham, 2024; `nas.proxies.az_nas_components`) is reported apart: it ranks expressivity,
progressivity, trainability and FLOPs over the population and sums the log relative ranks, so it scores these
networks only together.

`--retest N` trains the first N architectures a second time with another seed (initialisation, batch order,
augmentation): the Spearman between the two trainings is the noise ceiling of the trained accuracy itself, which
no proxy can be expected to beat on this data. The label an architecture is ranked by is then the mean of its
trainings (less noisy than either); `single_training` keeps the proxies' Spearman against the first alone.

    python benchmarks/proxy_quality.py --archs 40 [--retest 12]    -> benchmarks/results/proxy-quality.json
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from benchmarks._io import kendall, spearman, write_json_atomic, write_text_atomic  # noqa: E402
from nas.data import load_data  # noqa: E402
from nas.evaluate import proxy_minibatch  # noqa: E402
from nas.proxies import PROXIES, TrainRecipe, az_nas_components, score, short_train  # noqa: E402
from search_spaces import CIFAR_SPACE, ArchSpec, build_model, sample_archs  # noqa: E402

DATA = ROOT.parent / "shared/data/cifar10_subset.npz"
TRAINED_RECIPE = TrainRecipe(steps=1500, report_every=1500)
RESULTS = ROOT / "benchmarks/results"


def train_accuracy(spec: ArchSpec, data, seed: int) -> tuple[float, float]:
    """(top-1 test accuracy, seconds) of `spec` trained with TRAINED_RECIPE from `seed`."""
    torch.manual_seed(seed)
    started = time.perf_counter()
    accuracy, _ = short_train(build_model(spec, num_classes=data.num_classes), (data.x_train, data.y_train),
                              (data.x_test, data.y_test), TRAINED_RECIPE, seed=seed)
    return accuracy, time.perf_counter() - started


def _proxy_scores(spec: ArchSpec, data, seed: int, names) -> dict:
    """``{name: {"value", "seconds"}}`` of the proxies `names` on `spec`, all on one seeded minibatch."""
    images, labels = proxy_minibatch(data, 32, seed)
    scores = {}
    for name in names:
        result = score(name, spec, images, labels, seed=seed, num_classes=data.num_classes, resolution=32,
                       train_data=(data.x_train, data.y_train), test_data=(data.x_test, data.y_test))
        scores[name] = {"value": result.value, "seconds": result.seconds}
    return scores


def _evaluate(spec: ArchSpec, data, seed: int) -> dict:
    row: dict = {"digest": spec.digest(), "spec": spec.to_dict(), "proxies": _proxy_scores(spec, data, seed, PROXIES)}
    row["trained_accuracy"], row["train_seconds"] = train_accuracy(spec, data, seed)
    return row


def _add_new_proxies(rows: list[dict], data, seed: int, scorer=None) -> int:
    """Score `rows` (cached with `seed`) with the proxies added to `PROXIES` since; returns how many rows changed.
    `scorer(spec, data, seed, names)` defaults to `_proxy_scores`."""
    scorer = scorer or _proxy_scores
    updated = 0
    for row in rows:
        missing = [name for name in PROXIES if name not in row["proxies"]]
        if missing:
            print(f"scoring cached {row['digest'][:10]} with {', '.join(missing)}", flush=True)
            row["proxies"].update(scorer(ArchSpec.from_dict(row["spec"]), data, seed, missing))
            updated += 1
    return updated


def _az_nas(spec: ArchSpec, data, seed: int) -> dict:
    """AZ-NAS's components of `spec` on the zero-cost proxies' minibatch, with their run time."""
    images, _ = proxy_minibatch(data, 32, seed)
    torch.manual_seed(seed)
    started = time.perf_counter()
    values = az_nas_components(build_model(spec, num_classes=data.num_classes), images)
    return {**values, "seconds": time.perf_counter() - started}


def _log_rank_sum(columns: list[list[float]]) -> list[float]:
    """AZ-NAS's aggregation: per network, the sum over columns of log(rank / N), ranks 1..N ascending."""
    n = len(columns[0])
    ranks = [np.argsort(np.argsort(column)) + 1 for column in columns]
    return [float(sum(np.log(r[i] / n) for r in ranks)) for i in range(n)]


def az_nas_summary(rows: list[dict], components: list[dict]) -> dict:
    """Spearman/Kendall of AZ-NAS (expressivity, progressivity, trainability and FLOPs, rank-aggregated over
    these networks, as the paper) and of each component, against the trained accuracy."""
    accuracy = [r["trained_accuracy"] for r in rows]
    columns = {name: [c[name] for c in components] for name in ("expressivity", "progressivity", "trainability")}
    columns["flops"] = [r["proxies"]["flops"]["value"] for r in rows]
    combined = _log_rank_sum(list(columns.values()))
    return {"spearman": spearman(combined, accuracy), "kendall": kendall(combined, accuracy),
            "seconds_per_arch": statistics.mean(c["seconds"] for c in components) +
            statistics.mean(r["proxies"]["flops"]["seconds"] for r in rows),
            "of": list(columns), "components": {name: spearman(column, accuracy) for name, column in columns.items()},
            "note": "ranks over a population of networks: not a per-network proxy the search can use as is"}


def with_mean_label(rows: list[dict], retests: dict[str, float]) -> list[dict]:
    """`rows` with ``trained_accuracy`` the mean of each architecture's trainings (the first, and its retest where
    there is one) and ``trainings`` their number; the first training stays as ``first_training_accuracy``."""
    labelled = []
    for row in rows:
        accuracies = [row["trained_accuracy"]] + ([retests[row["digest"]]] if row["digest"] in retests else [])
        labelled.append({**row, "trained_accuracy": statistics.mean(accuracies), "trainings": len(accuracies),
                         "first_training_accuracy": row["trained_accuracy"]})
    return labelled


def noise_ceiling(rows: list[dict], retests: dict[str, float]) -> dict:
    """Agreement of two trainings of the same architectures, and every proxy on that same subset (against the
    first training). With r the Spearman between trainings, the mean of two trainings has reliability
    2r / (1 + r) (Spearman-Brown), and sqrt of it bounds what a perfect proxy can reach against that label. A third
    training of the same recipe, used as a proxy, would reach r / sqrt((1 + r) / 2) against the mean of two others:
    the mark for any proxy that is itself a training on this data."""
    subset = [r for r in rows if r["digest"] in retests]
    first = [r["trained_accuracy"] for r in subset]
    second = [retests[r["digest"]] for r in subset]
    between = spearman(first, second)
    mean_reliability = 2 * between / (1 + between) if between > 0 else 0.0
    return {"archs": len(subset), "spearman_between_trainings": between,
            "kendall_between_trainings": kendall(first, second),
            "mean_of_two_reliability": mean_reliability, "ceiling_against_mean_of_two": mean_reliability ** 0.5,
            "one_training_against_mean_of_two": between / ((1 + between) / 2) ** 0.5 if between > 0 else 0.0,
            "median_abs_diff": statistics.median(abs(a - b) for a, b in zip(first, second)),
            "proxies_on_this_subset": {name: spearman([r["proxies"][name]["value"] for r in subset], first)
                                       for name in subset[0]["proxies"]}}


def summarise(rows: list[dict]) -> dict:
    accuracy = [r["trained_accuracy"] for r in rows]
    proxies = {}
    for name in rows[0]["proxies"]:
        values = [r["proxies"][name]["value"] for r in rows]
        proxies[name] = {"spearman": spearman(values, accuracy), "kendall": kendall(values, accuracy),
                         "seconds_per_arch": statistics.mean(r["proxies"][name]["seconds"] for r in rows)}
    # Rank aggregation of the zero-cost proxies (AZ-NAS-style: sum of log relative ranks), if it ranks better.
    zero_cost = [n for n in proxies if n not in ("params", "flops", "short_train")]
    combined = _log_rank_sum([[r["proxies"][n]["value"] for r in rows] for n in zero_cost])
    proxies["zero_cost_rank_sum"] = {"spearman": spearman(combined, accuracy), "kendall": kendall(combined, accuracy),
                                     "seconds_per_arch": sum(proxies[n]["seconds_per_arch"] for n in zero_cost),
                                     "of": zero_cost}
    candidates = {n: p for n, p in proxies.items() if n not in ("params", "flops")}
    default = max(candidates, key=lambda n: candidates[n]["spearman"])
    return {"archs": len(rows), "default_proxy": default, "proxies": proxies,
            "trained_accuracy": {"min": min(accuracy), "median": statistics.median(accuracy), "max": max(accuracy)},
            "recipe": TRAINED_RECIPE.__dict__, "date": time.strftime("%Y-%m-%d")}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--archs", type=int, default=40)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--cache", type=Path, default=RESULTS / "proxy-quality-archs.jsonl")
    parser.add_argument("--out", type=Path, default=RESULTS / "proxy-quality.json")
    parser.add_argument("--retest", type=int, default=0, help="train this many architectures again, another seed")
    parser.add_argument("--retest-cache", type=Path, default=RESULTS / "proxy-quality-retest.jsonl")
    args = parser.parse_args(argv)
    if not DATA.exists():
        print(f"error: {DATA} not found (the shared CIFAR-10 subset)", file=sys.stderr)
        return 2
    torch.set_num_threads(args.threads)
    data = load_data(DATA)
    done = {}
    if args.cache.exists():
        for line in args.cache.read_text().splitlines():
            row = json.loads(line)
            done[row["digest"]] = row
    specs = sample_archs(args.archs, args.seed, CIFAR_SPACE)
    if _add_new_proxies([done[s.digest()] for s in specs if s.digest() in done], data, args.seed):
        write_text_atomic(args.cache, "".join(json.dumps(row) + "\n" for row in done.values()))  # whole, never half
    rows = []
    for i, spec in enumerate(specs):
        if spec.digest() not in done:
            row = _evaluate(spec, data, args.seed)
            with args.cache.open("a") as handle:  # one line per finished architecture: a stop loses at most one
                handle.write(json.dumps(row) + "\n")
            done[row["digest"]] = row
        rows.append(done[spec.digest()])
        print(f"[{i + 1}/{args.archs}] trained accuracy {rows[-1]['trained_accuracy']:.3f} "
              f"({rows[-1]['train_seconds']:.0f} s)", flush=True)
    retests = {}
    if args.retest_cache.exists():
        retests = {row["digest"]: row["trained_accuracy"]
                   for row in map(json.loads, args.retest_cache.read_text().splitlines())}
    for i, row in enumerate(rows[:args.retest]):
        if row["digest"] not in retests:
            accuracy, seconds = train_accuracy(ArchSpec.from_dict(row["spec"]), data, args.seed + 1)
            with args.retest_cache.open("a") as handle:
                handle.write(json.dumps({"digest": row["digest"], "seed": args.seed + 1, "trained_accuracy": accuracy,
                                         "train_seconds": seconds}) + "\n")
            retests[row["digest"]] = accuracy
        print(f"retest [{i + 1}/{args.retest}] {row['trained_accuracy']:.3f} then {retests[row['digest']]:.3f}",
              flush=True)
    retests = {digest: accuracy for digest, accuracy in retests.items() if digest in {r["digest"] for r in rows}}
    labelled = with_mean_label(rows, retests)
    result = summarise(labelled)
    result["label"] = {"what": f"mean of each architecture's trainings with TRAINED_RECIPE (seeds {args.seed} and "
                               f"{args.seed + 1})",
                       "trainings_per_arch": {str(n): sum(r["trainings"] == n for r in labelled) for n in (1, 2)}}
    if retests:
        result["single_training"] = {name: p["spearman"] for name, p in summarise(rows)["proxies"].items()}
    result["az_nas"] = az_nas_summary(labelled, [_az_nas(ArchSpec.from_dict(r["spec"]), data, args.seed)
                                                 for r in rows])
    if len(retests) >= 3:
        result["noise_ceiling"] = noise_ceiling(rows, retests)
    write_json_atomic(args.out, result)
    for name, p in sorted(result["proxies"].items(), key=lambda item: -item[1]["spearman"]):
        print(f"{name:<20} spearman {p['spearman']:+.3f}  kendall {p['kendall']:+.3f}  {p['seconds_per_arch']:.2f} s")
    if "noise_ceiling" in result:
        ceiling = result["noise_ceiling"]
        print(f"two trainings of {ceiling['archs']} archs: spearman {ceiling['spearman_between_trainings']:+.3f}, "
              f"median |difference| {ceiling['median_abs_diff']:.3f}; a perfect proxy would reach "
              f"{ceiling['spearman_between_trainings'] ** 0.5:.3f} against one training, "
              f"{ceiling['ceiling_against_mean_of_two']:.3f} against the mean of two, and one more training of the "
              f"recipe as a proxy {ceiling['one_training_against_mean_of_two']:.3f}")
    az = result["az_nas"]
    print(f"{'az_nas (population)':<20} spearman {az['spearman']:+.3f}  kendall {az['kendall']:+.3f}  components "
          + ", ".join(f"{name} {value:+.3f}" for name, value in az["components"].items()))
    print(f"label: mean of the trainings ({result['label']['trainings_per_arch']} archs with 1/2 trainings); "
          f"default proxy: {result['default_proxy']} -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
