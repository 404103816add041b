"""Which accuracy proxy ranks this space's architectures like their trained accuracy?

Samples architectures from the CIFAR-scale space, trains each with one fixed recipe on the CIFAR-10 subset
(``TRAINED_RECIPE``: 1500 steps of batch 128 = ~38 epochs of the 5,000 training images, AdamW 2e-3, warmup +
cosine, label smoothing 0.1, crop + flip; top-1 on the 1,000 test images), scores each with every proxy, and
reports Spearman and Kendall of every proxy against the trained accuracy with the proxies' run times. Results per
architecture are cached (one JSON line each) so a stopped run resumes.

AZ-NAS (Lee & Ham, 2024; `nas.proxies.az_nas_components`) is reported apart: it ranks expressivity,
progressivity, trainability and FLOPs over the population and sums the log relative ranks, so it scores these
networks only together.

The learned ranker (`nas.ranker`, proxy ``ranker``) is judged by k-fold cross-validation only (`RANKER_FOLDS`
folds, `RANKER_REPEATS` shuffles; its ridge strength chosen inside each training fold), on the same label; fitted
on every network it becomes the shipped ranker (``--write-ranker``). It is checked once more on networks it never
saw: the trained networks of benchmarks/search_vs_reference.py (picks of the search and the reference families).
Its few-shot use, fitted on K networks' ``short_train`` accuracies instead of trained labels, is measured by
drawing K of the networks, fitting on them and ranking the rest.

`--retest N` trains the first N architectures a second time with another seed (initialisation, batch order,
augmentation): the Spearman between the two trainings is the noise ceiling of the trained accuracy itself, which
no proxy can be expected to beat on this data. The label an architecture is ranked by is then the mean of its
trainings (less noisy than either); `single_training` keeps the proxies' Spearman against the first alone.

    python benchmarks/proxy_quality.py --archs 40 [--retest 12] [--write-ranker]
        -> benchmarks/results/proxy-quality.json (and nas/rankers/cifar.json)
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
from nas.proxies import (PROXIES, RANKER_FEATURES, TrainRecipe, az_nas_components, ranker_features,  # noqa: E402
                         score, short_train)
from nas.ranker import SHIPPED_RANKER, Ranker, fit_ranker  # noqa: E402
from search_spaces import CIFAR_REFERENCE_ARCHS, CIFAR_SPACE, ArchSpec, build_model, sample_archs  # noqa: E402

DATA = ROOT.parent / "shared/data/cifar10_subset.npz"
TRAINED_RECIPE = TrainRecipe(steps=1500, report_every=1500)
RESULTS = ROOT / "benchmarks/results"
LEARNED = ("ranker",)  # fitted on this benchmark's labels: scored by cross-validation, never per cached row
RANKER_FOLDS, RANKER_REPEATS = 5, 5
FEW_SHOT_KS, FEW_SHOT_DRAWS = (8, 12, 16, 24, 32), 20
# feature sets the ranker was compared on (the shipped one is RANKER_FEATURES)
ZERO_COST_LOGS = tuple(f"log_{name}" for name in ("params", "flops", "synflow", "naswot", "grad_norm", "snip", "zico",
                                                  "meco", "swap"))
RANKER_FEATURE_SETS = {"shipped": RANKER_FEATURES, "zero_cost_scores": ZERO_COST_LOGS,
                       "zero_cost_scores_and_az_nas": ZERO_COST_LOGS + RANKER_FEATURES[2:]}


def train_accuracy(spec: ArchSpec, data, seed: int) -> tuple[float, float]:
    """(top-1 test accuracy, seconds) of `spec` trained with TRAINED_RECIPE from `seed`."""
    torch.manual_seed(seed)
    started = time.perf_counter()
    accuracy, _ = short_train(build_model(spec, num_classes=data.num_classes), (data.x_train, data.y_train),
                              (data.x_test, data.y_test), TRAINED_RECIPE, seed=seed)
    return accuracy, time.perf_counter() - started


def _scored_proxies() -> list[str]:
    return [name for name in PROXIES if name not in LEARNED]


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
    row: dict = {"digest": spec.digest(), "spec": spec.to_dict(),
                 "proxies": _proxy_scores(spec, data, seed, _scored_proxies()),
                 "ranker_features": _ranker_features(spec, data, seed)}
    row["trained_accuracy"], row["train_seconds"] = train_accuracy(spec, data, seed)
    return row


def _ranker_features(spec: ArchSpec, data, seed: int) -> dict:
    """`nas.proxies.ranker_features` of `spec` on the proxies' minibatch, with their run time as ``seconds``."""
    images, _ = proxy_minibatch(data, 32, seed)
    started = time.perf_counter()
    features = ranker_features(spec, lambda: build_model(spec, num_classes=data.num_classes), images, 32, seed)
    return {**features, "seconds": time.perf_counter() - started}


def _add_ranker_features(rows: list[dict], data, seed: int) -> int:
    """Give `rows` (cached with `seed`) the ranker's features where they lack them; returns how many changed."""
    missing = [row for row in rows if set(RANKER_FEATURES) - set(row.get("ranker_features", {}))]
    for row in missing:
        row["ranker_features"] = _ranker_features(ArchSpec.from_dict(row["spec"]), data, seed)
    return len(missing)


def _features(row: dict) -> dict[str, float]:
    """Every feature a ranker may use: the shipped ranker's and the log of each cached zero-cost score."""
    logs = {f"log_{name}": float(np.log(max(abs(p["value"]), 1e-12))) for name, p in row["proxies"].items()}
    return {**logs, **row["ranker_features"]}


def cross_validated_ranker(rows: list[dict], features=RANKER_FEATURES, folds: int = RANKER_FOLDS,
                           repeats: int = RANKER_REPEATS) -> dict:
    """Spearman of out-of-fold ranker predictions against ``trained_accuracy``: per repeat (a shuffle of `rows` into
    `folds` folds, each predicted by a ranker fitted on the others) pooled over all networks, and per fold."""
    x, y = [_features(r) for r in rows], [r["trained_accuracy"] for r in rows]
    pooled, pooled_kendall, per_fold = [], [], []
    for repeat in range(repeats):
        order = np.random.default_rng(repeat).permutation(len(rows))
        predictions = np.empty(len(rows))
        for fold in np.array_split(order, folds):
            train = [i for i in order if i not in set(fold)]
            ranker = fit_ranker([x[i] for i in train], [y[i] for i in train], features, "cross-validation fold")
            predictions[fold] = [ranker.predict(x[i]) for i in fold]
            per_fold.append(spearman([predictions[i] for i in fold], [y[i] for i in fold]))
        pooled.append(spearman(list(predictions), y))
        pooled_kendall.append(kendall(list(predictions), y))
    return {"spearman": statistics.mean(pooled), "spearman_spread": statistics.pstdev(pooled),
            "kendall": statistics.mean(pooled_kendall),
            "spearman_per_repeat": pooled, "spearman_per_fold": per_fold, "folds": folds, "repeats": repeats,
            "features": list(features)}


def shipped_ranker(rows: list[dict]) -> Ranker:
    """The ranker fitted on every network's mean-of-trainings label: what ``--write-ranker`` ships."""
    return fit_ranker([_features(r) for r in rows], [r["trained_accuracy"] for r in rows], RANKER_FEATURES,
                      f"{len(rows)} CIFAR-scale networks of the cifar space at 32 px, trained on the CIFAR-10 "
                      f"subset with benchmarks/proxy_quality.py's TRAINED_RECIPE (mean top-1 of 2 seeds)")


def few_shot_ranker(rows: list[dict], ks=FEW_SHOT_KS, draws: int = FEW_SHOT_DRAWS) -> dict:
    """Per K: a ranker fitted on K drawn networks' ``short_train`` accuracies (what a search on new data can
    afford), its Spearman on the other networks against their trained label, and on the same networks MeCo's,
    FLOPs' and the shipped-style ranker's (fitted on the K networks' trained labels), mean and spread over draws."""
    x, y = [_features(r) for r in rows], [r["trained_accuracy"] for r in rows]
    short = [r["proxies"]["short_train"]["value"] for r in rows]
    out = {}
    for k in ks:
        by: dict[str, list[float]] = {"few_shot_ranker": [], "ranker_on_trained_labels": [], "meco": [], "flops": []}
        for draw in range(draws):
            order = np.random.default_rng(1000 + draw).permutation(len(rows))
            shots, rest = list(order[:k]), list(order[k:])
            label = [y[i] for i in rest]
            for name, targets in (("few_shot_ranker", short), ("ranker_on_trained_labels", y)):
                ranker = fit_ranker([x[i] for i in shots], [targets[i] for i in shots], RANKER_FEATURES, "few shots")
                by[name].append(spearman([ranker.predict(x[i]) for i in rest], label))
            for name in ("meco", "flops"):
                by[name].append(spearman([rows[i]["proxies"][name]["value"] for i in rest], label))
        out[str(k)] = {name: {"spearman": statistics.mean(v), "spread": statistics.pstdev(v)} for name, v in by.items()}
    return {"draws": draws, "by_k": out, "label_of_the_shots": "short_train (300 steps) accuracy"}


def held_out_check(ranker: Ranker, data, seed: int, rows_path: Path = RESULTS / "search-vs-reference.jsonl") -> dict:
    """`ranker` (fitted on this benchmark's networks) and the single proxies on networks it never saw: the trained
    networks of benchmarks/search_vs_reference.py, against their mean trained top-1 (same recipe)."""
    if not rows_path.exists():
        return {}
    rows = [json.loads(line) for line in rows_path.read_text().splitlines() if line.strip()]
    specs = {r["digest"]: ArchSpec.from_dict(r["spec"]) for r in rows if r["kind"] == "pick"}
    specs.update({spec.digest(): spec for spec in CIFAR_REFERENCE_ARCHS.values()})
    accuracies: dict[str, list[float]] = {}
    names: dict[str, str] = {}
    for r in rows:
        if r["kind"] == "training":
            accuracies.setdefault(r["digest"], []).append(r["accuracy"])
            names[r["digest"]] = r["name"]
    label = [statistics.mean(accuracies[d]) for d in accuracies]
    networks = [{"proxies": _proxy_scores(specs[d], data, seed, ["meco", "flops"]),
                 "ranker_features": _ranker_features(specs[d], data, seed)} for d in accuracies]
    predicted = [ranker.predict(_features(n)) for n in networks]
    return {"networks": [names[d] for d in accuracies], "label": label, "ranker_prediction": predicted,
            "spearman": {"ranker": spearman(predicted, label),
                         **{name: spearman([n["proxies"][name]["value"] for n in networks], label)
                            for name in ("meco", "flops")}}}


def _add_new_proxies(rows: list[dict], data, seed: int, scorer=None) -> int:
    """Score `rows` (cached with `seed`) with the proxies added to `PROXIES` since; returns how many rows changed.
    `scorer(spec, data, seed, names)` defaults to `_proxy_scores`."""
    scorer = scorer or _proxy_scores
    updated = 0
    for row in rows:
        missing = [name for name in _scored_proxies() if name not in row["proxies"]]
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
    learned = cross_validated_ranker(rows)
    proxies["ranker"] = {"spearman": learned["spearman"], "kendall": learned["kendall"],
                         "seconds_per_arch": statistics.mean(r["ranker_features"]["seconds"] for r in rows),
                         "cross_validated": learned}
    candidates = {n: p for n, p in proxies.items() if n not in ("params", "flops")}  # learned: cross-validated
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
    parser.add_argument("--write-ranker", action="store_true",
                        help=f"fit the ranker on every network and write it to {SHIPPED_RANKER.relative_to(ROOT)}")
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
    cached = [done[s.digest()] for s in specs if s.digest() in done]
    if _add_new_proxies(cached, data, args.seed) + _add_ranker_features(cached, data, args.seed):
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
    ranker = shipped_ranker(labelled)
    result["ranker"] = {"feature_sets": {name: cross_validated_ranker(labelled, features)
                                         for name, features in RANKER_FEATURE_SETS.items()},
                        "few_shot": few_shot_ranker(labelled), "held_out": held_out_check(ranker, data, args.seed),
                        "fitted_on_all": ranker.to_dict()}
    if args.write_ranker:
        SHIPPED_RANKER.parent.mkdir(exist_ok=True)
        write_json_atomic(SHIPPED_RANKER, ranker.to_dict())
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
    for name, cv in result["ranker"]["feature_sets"].items():
        print(f"ranker on {name:<28} cross-validated spearman {cv['spearman']:+.3f} +- {cv['spearman_spread']:.3f}")
    for k, by in result["ranker"]["few_shot"]["by_k"].items():
        print(f"few-shot K={k:>2}: " + ", ".join(f"{n} {v['spearman']:+.3f}" for n, v in by.items()))
    if result["ranker"]["held_out"]:
        print("held out (search-vs-reference networks): " + ", ".join(
            f"{n} {v:+.3f}" for n, v in result["ranker"]["held_out"]["spearman"].items()))
    az = result["az_nas"]
    print(f"{'az_nas (population)':<20} spearman {az['spearman']:+.3f}  kendall {az['kendall']:+.3f}  components "
          + ", ".join(f"{name} {value:+.3f}" for name, value in az["components"].items()))
    print(f"label: mean of the trainings ({result['label']['trainings_per_arch']} archs with 1/2 trainings); "
          f"default proxy: {result['default_proxy']} -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
