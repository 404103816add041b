"""Does the sum of a table's block entries predict a network's measured latency? (additivity)

Samples architectures from the space, predicts each from the target's table (measuring missing blocks first, on
the target's own device), measures each network end to end the same way (same timer, settings, threads, cache
flush) in `--passes` passes over the list, and reports the error distribution against the median of the passes,
the rank correlation, and how far the first half of the passes lands from the second: the noise floor no table can
beat on this machine. Before the networks, a sample of the table's entries is timed again (`LatencyTable.drift`):
a table measured while the machine ran at another speed is off by that much whatever its additivity, so the
errors are also reported with the measured times divided by that ratio (labelled; the goal is judged on the
plain ones). Eight of the correction's networks are timed again too (`TableMeasurer.network_drift`).

With ``--fresh-table`` the table is measured by the run itself into a temporary database: the blocks of the test
architectures and of `--correction-networks` other networks (sampled with seed + 1000, as `launch.py measure`
does); then the correction networks and the test networks are timed end to end in the same passes, alternated, and
the additivity correction is fitted on the correction networks alone. That isolates the additive model from a
table's staleness: a shared VM's speed wanders by several % over tens of minutes, networks and blocks alone not
always the same way, so a correction timed even minutes before the test networks carries that wander into the
errors (the first fresh-table runs did so: results/latency-fidelity-cpu-fresh-table*-sequential.json).

    python benchmarks/latency_fidelity.py --target cpu --archs 50
        -> benchmarks/results/latency-fidelity-cpu.json
    python benchmarks/latency_fidelity.py --target cpu --archs 50 --fresh-table
        -> benchmarks/results/latency-fidelity-cpu-fresh-table.json
"""
from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from benchmarks._io import spearman, write_json_atomic  # noqa: E402
from latency_tables.blocks import decompose  # noqa: E402
from latency_tables.measure import quick_settings, time_networks  # noqa: E402
from latency_tables.measurer import TableMeasurer  # noqa: E402
from latency_tables.correction import AdditivityCorrection  # noqa: E402
from latency_tables.table import LatencyTable, default_settings, open_table  # noqa: E402
from latency_tables.storage import LatencyDB  # noqa: E402
from latency_tables.targets import get_target, software_versions  # noqa: E402
from search_spaces import DEFAULT_SPACE, sample_archs  # noqa: E402


def error_summary(predicted: list[float], measured: list[float]) -> dict:
    """Fractions within 5% / 10%, median and p90 |relative error|, median signed error, Spearman."""
    signed = [(p - m) / m for p, m in zip(predicted, measured)]
    errors = [abs(e) for e in signed]
    return {"within_5pct": sum(e <= 0.05 for e in errors) / len(errors),
            "within_10pct": sum(e <= 0.10 for e in errors) / len(errors),
            "median_abs_rel_err": statistics.median(errors), "p90_abs_rel_err": float(np.percentile(errors, 90)),
            "median_rel_err": statistics.median(signed), "spearman": spearman(predicted, measured)}


def _interleave(first: list, second: list) -> list:
    """`first` and `second` alternated while both last, then the rest of the longer: in every pass over the list
    both are timed across the whole pass."""
    merged = [item for pair in zip(first, second) for item in pair]
    return merged + first[len(second):] + second[len(first):]


def _in_sample_fit(rows: list[dict]) -> dict | None:
    """The error summary of a correction fitted on the test networks themselves (their entries, weights,
    activations and measured times): what the best correction of this form reaches on these timings. Not a
    prediction; it tells the form's misses (this too misses) from the fit's (only the real one misses). None
    below the 3 networks a fit needs."""
    if len(rows) < 3:
        return None
    fit = AdditivityCorrection.fit([(r["entries_ms"], r["weights_mb"], r["activations_mb"], r["measured_ms"])
                                    for r in rows])
    predicted = [fit.block_ms(r["entries_ms"], r["weights_mb"], r["activations_mb"]) for r in rows]
    return {**error_summary(predicted, [r["measured_ms"] for r in rows]), "fit": dataclasses.asdict(fit)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", default="cpu")
    parser.add_argument("--archs", type=int, default=50)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--latency-db", help="table to use (default: the shipped one)")
    parser.add_argument("--resolution", type=int)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--repeats", type=int, help="exactly this many timed repeats (quick, noisier runs)")
    parser.add_argument("--passes", type=int, default=4, help="passes over the networks (even; default 4)")
    parser.add_argument("--drift-blocks", type=int, default=24, help="stored entries timed again (0: skip)")
    parser.add_argument("--fresh-table", action="store_true", help="measure a table (and its correction) in this "
                        "run, into a temporary database, instead of using a stored one")
    parser.add_argument("--correction-networks", type=int, default=40, help="with --fresh-table: networks the "
                        "additivity correction is fitted on (default 40, as launch.py measure)")
    args = parser.parse_args(argv)
    if args.passes < 2 or args.passes % 2:
        parser.error("--passes must be even and at least 2")
    if args.fresh_table and args.latency_db:
        parser.error("--fresh-table measures its own table: leave out --latency-db")
    if not args.fresh_table:
        return _run(args, open_table(args.target, db=args.latency_db, resolution=args.resolution))
    target = get_target(args.target)
    with tempfile.TemporaryDirectory() as scratch, LatencyDB(Path(scratch) / "fresh.sqlite") as db:
        return _run(args, LatencyTable(target, db, default_settings(target, resolution=args.resolution)))


def _run(args: argparse.Namespace, table: LatencyTable) -> int:
    if args.repeats:
        table = LatencyTable(table.target, table.db, quick_settings(table.settings, args.repeats))
    measurer = TableMeasurer(table)
    device, device_string = measurer.device, measurer.device_string
    specs = sample_archs(args.archs, args.seed, DEFAULT_SPACE)
    resolution = table.settings.resolution
    correction_specs = (sample_archs(args.correction_networks, args.seed + 1000, DEFAULT_SPACE)
                        if args.fresh_table else [])
    measured_now = measurer.measure_missing([b for spec in specs + correction_specs
                                             for b in decompose(spec, resolution)])
    drift = measurer.drift(args.drift_blocks) if args.drift_blocks and not args.fresh_table else None
    network_drift = measurer.network_drift() if args.drift_blocks and not args.fresh_table else None
    for timed in filter(None, (drift, network_drift)):
        print(f"{timed.timed} stored {timed.what} timed again: now {timed.ratio:.3f}x their stored times", flush=True)
    timed = _interleave(specs, correction_specs)
    per_pass: list[list[float]] = [[] for _ in timed]

    def record(pass_index: int, i: int, ms: float) -> None:
        per_pass[i].append(ms)
        print(f"pass {pass_index + 1} [{i + 1:>3}/{len(timed)}] measured {ms:9.3f} ms", flush=True)
    medians = dict(zip((spec.digest() for spec in timed),
                       zip(time_networks(timed, table.settings, device, args.passes, record), per_pass)))
    if args.fresh_table:
        fit = measurer.store_correction(correction_specs, [medians[spec.digest()][0] for spec in correction_specs])
        print(f"fresh table: {measured_now} entries; correction {dataclasses.asdict(fit)}", flush=True)
    half = args.passes // 2
    rows = []
    for spec in specs:
        measured, times = medians[spec.digest()]
        prediction = table.predict(spec)
        error = (prediction.latency_ms - measured) / measured
        first_ms, second_ms = statistics.median(times[:half]), statistics.median(times[half:])
        entries_ms, weights, activations = table.correction_inputs(spec)  # what the correction is fitted on
        rows.append(dict(digest=spec.digest(), predicted_ms=round(prediction.latency_ms, 4),
                         measured_ms=round(measured, 4), rel_err=round(error, 4), entries_ms=round(entries_ms, 4),
                         retest_rel_diff=round(abs(first_ms - second_ms) / measured, 4),
                         weights_mb=round(weights, 3), activations_mb=round(activations, 3),
                         source=prediction.source, mixers=[s.mixer.kind for s in spec.stages],
                         stem_stride=spec.stem.stride))
    result = {
        "target": table.target.name, "device": device_string, "archs": len(rows), "seed": args.seed,
        "passes": args.passes,
        **error_summary([r["predicted_ms"] for r in rows], [r["measured_ms"] for r in rows]),
        "retest_median_abs_rel_diff": statistics.median(r["retest_rel_diff"] for r in rows),
        "retest_p90_abs_rel_diff": float(np.percentile([r["retest_rel_diff"] for r in rows], 90)),
        "table_drift": None if drift is None else dataclasses.asdict(drift),
        "drift_corrected": None if drift is None else error_summary(
            [r["predicted_ms"] for r in rows], [r["measured_ms"] / drift.ratio for r in rows]),
        "correction_network_drift": None if network_drift is None else dataclasses.asdict(network_drift),
        "correction_fitted_on_these_networks": _in_sample_fit(rows),
        "correction": None if table.correction() is None else dataclasses.asdict(table.correction()),
        "entries_measured_for_this_run": measured_now, "fresh_table": args.fresh_table,
        "correction_networks_timed_with_test_networks": len(correction_specs),
        "table": "measured by this run (temporary)" if args.fresh_table else table.db.url,
        "settings": table.settings.to_dict(), "software": software_versions(),
        "date": time.strftime("%Y-%m-%d"), "rows": rows,
    }
    suffix = "-fresh-table" if args.fresh_table else ""
    out = args.out or ROOT / f"benchmarks/results/latency-fidelity-{table.target.name}{suffix}.json"
    write_json_atomic(out, result)
    print(f"within 5%: {result['within_5pct']:.0%}  within 10%: {result['within_10pct']:.0%}  median |err| "
          f"{result['median_abs_rel_err']:.1%}  p90 |err| {result['p90_abs_rel_err']:.1%}  spearman "
          f"{result['spearman']:.3f}  (the two halves of the passes differ by a median "
          f"{result['retest_median_abs_rel_diff']:.1%}) -> {out}")
    if drift is not None:
        corrected = result["drift_corrected"]
        print(f"the table's entries now run {drift.ratio:.3f}x their stored times; divided by that: within 5% "
              f"{corrected['within_5pct']:.0%}, within 10% {corrected['within_10pct']:.0%}, median |err| "
              f"{corrected['median_abs_rel_err']:.1%}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
