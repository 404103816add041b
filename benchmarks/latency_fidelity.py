"""Does the sum of a table's block entries predict a network's measured latency? (DESIGN.md: additivity.)

Samples architectures from the space, predicts each from the target's table (measuring missing blocks first, on
the target's own device), measures each network end to end the same way (same timer, settings, threads, cache
flush) in two passes over the list, and reports the error distribution against the mean of the two passes, the
rank correlation, and the passes' disagreement: the noise floor no table can beat on this machine.

    python benchmarks/latency_fidelity.py --target cpu --archs 50
        -> benchmarks/results/latency-fidelity-cpu.json
"""
from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from benchmarks._io import spearman, write_json_atomic  # noqa: E402
from latency_tables.blocks import decompose  # noqa: E402
from latency_tables.measure import quick_settings, time_network  # noqa: E402
from latency_tables.predict import LatencyTable, open_table, weights_mb  # noqa: E402
from latency_tables.targets import current_device_string, software_versions  # noqa: E402
from search_spaces import DEFAULT_SPACE, sample_archs  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", default="cpu")
    parser.add_argument("--archs", type=int, default=50)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--latency-db", help="table to use (default: the shipped one)")
    parser.add_argument("--resolution", type=int)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--repeats", type=int, help="exactly this many timed repeats (quick, noisier runs)")
    args = parser.parse_args(argv)
    table = open_table(args.target, db=args.latency_db, resolution=args.resolution)
    if args.repeats:
        table = LatencyTable(table.target, table.db, quick_settings(table.settings, args.repeats))
    device = torch.device("cuda" if table.target.kind == "gpu" else "cpu")
    device_string = current_device_string(table.target)
    specs = sample_archs(args.archs, args.seed, DEFAULT_SPACE)
    resolution = table.settings.resolution
    measured_now = table.measure_missing([b for spec in specs for b in decompose(spec, resolution)])
    passes: list[list[float]] = [[], []]
    for number, measured in enumerate(passes):
        for i, spec in enumerate(specs):
            measured.append(time_network(spec, table.settings, device).median_ms)
            print(f"pass {number + 1} [{i + 1:>3}/{len(specs)}] measured {measured[-1]:9.3f} ms", flush=True)
    rows = []
    for spec, first, second in zip(specs, *passes):
        prediction, measured = table.predict(spec), (first + second) / 2
        error = (prediction.latency_ms - measured) / measured
        rows.append(dict(digest=spec.digest(), predicted_ms=round(prediction.latency_ms, 4),
                         measured_ms=round(measured, 4), rel_err=round(error, 4),
                         retest_rel_diff=round(abs(first - second) / measured, 4),
                         weights_mb=round(weights_mb(decompose(spec, resolution), table.settings.dtype), 3),
                         source=prediction.source, mixers=[s.mixer.kind for s in spec.stages],
                         stem_stride=spec.stem.stride))
    errors = [abs(r["rel_err"]) for r in rows]
    result = {
        "target": table.target.name, "device": device_string, "archs": len(rows),
        "within_5pct": sum(e <= 0.05 for e in errors) / len(errors),
        "within_10pct": sum(e <= 0.10 for e in errors) / len(errors),
        "median_abs_rel_err": statistics.median(errors),
        "p90_abs_rel_err": float(np.percentile(errors, 90)),
        "median_rel_err": statistics.median(r["rel_err"] for r in rows),
        "spearman": spearman([r["predicted_ms"] for r in rows], [r["measured_ms"] for r in rows]),
        "retest_median_abs_rel_diff": statistics.median(r["retest_rel_diff"] for r in rows),
        "retest_p90_abs_rel_diff": float(np.percentile([r["retest_rel_diff"] for r in rows], 90)),
        "correction": None if table.correction() is None else dataclasses.asdict(table.correction()),
        "entries_measured_for_this_run": measured_now, "table": table.db.url,
        "settings": table.settings.to_dict(), "software": software_versions(),
        "date": time.strftime("%Y-%m-%d"), "rows": rows,
    }
    out = args.out or ROOT / f"benchmarks/results/latency-fidelity-{table.target.name}.json"
    write_json_atomic(out, result)
    print(f"within 5%: {result['within_5pct']:.0%}  within 10%: {result['within_10pct']:.0%}  median |err| "
          f"{result['median_abs_rel_err']:.1%}  p90 |err| {result['p90_abs_rel_err']:.1%}  spearman "
          f"{result['spearman']:.3f}  (the two passes differ by a median {result['retest_median_abs_rel_diff']:.1%}) "
          f"-> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
