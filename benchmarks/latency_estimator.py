"""How good is a table's own estimator? Fit it on half of its measured entries, predict the other half.

The estimator (`latency_tables.estimate.fitted_estimator`) is the GPU kernel model (`latency_tables.gpu_model`) with
the CPU's nominal rates and its efficiencies fitted on measured entries: what a CPU table estimates its unmeasured
blocks with. Reported for both forms: one efficiency per op class (what a table of 100+ entries uses) and three
tied numbers (one compute efficiency, one bandwidth efficiency, one per-kernel cost).

    python benchmarks/latency_estimator.py --target cpu   -> benchmarks/results/latency-estimator-cpu.json
"""
from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from benchmarks._io import spearman, write_json_atomic  # noqa: E402
from latency_tables.block_costs import variant_name  # noqa: E402
from latency_tables.estimate import CALIBRATION_SAMPLE, fitted_estimator  # noqa: E402
from latency_tables.table import block_from_key, open_table  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", default="cpu")
    parser.add_argument("--latency-db")
    parser.add_argument("--max-entries", type=int, default=600, help="entries used (random subset), for time")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    table = open_table(args.target, db=args.latency_db)
    items = sorted(table.entries().items())
    random.Random(args.seed).shuffle(items)
    items = items[:args.max_entries]
    started = time.perf_counter()
    samples = [(block_from_key(key, shape), m.median_ms) for (key, shape), m in items]
    half = len(samples) // 2
    s = table.settings
    measured = [ms for _, ms in samples[half:]]
    result = {"target": table.target.name, "entries": len(samples), "entries_fit": min(half, CALIBRATION_SAMPLE),
              "entries_predicted": len(measured)}
    for name, per_class in (("per_class", True), ("tied", False)):  # the product picks per_class from 100 up
        estimator = fitted_estimator(table.target, samples[:half], variant_name(s.implementation, s.runtime, s.dtype),
                                     s.batch, s.dtype, s.runtime, per_class=per_class)
        predicted = [estimator.block_ms(block) for block, _ in samples[half:]]
        errors = [abs(p - m) / m for p, m in zip(predicted, measured)]
        result[name] = {
            "median_abs_rel_err": statistics.median(errors), "p90_abs_rel_err": float(np.percentile(errors, 90)),
            "within_10pct": sum(e <= 0.10 for e in errors) / len(errors),
            "within_25pct": sum(e <= 0.25 for e in errors) / len(errors),
            "spearman": spearman(predicted, measured), "calibration": estimator.calibration.to_dict()}
    result["seconds"] = round(time.perf_counter() - started, 1)
    result["date"] = time.strftime("%Y-%m-%d")
    out = args.out or ROOT / f"benchmarks/results/latency-estimator-{table.target.name}.json"
    write_json_atomic(out, result)
    for name in ("per_class", "tied"):
        row = result[name]
        print(f"{name}: fit on {result['entries_fit']} entries, predicted {len(measured)}: median |err| "
              f"{row['median_abs_rel_err']:.1%}, p90 {row['p90_abs_rel_err']:.1%}, within 25% "
              f"{row['within_25pct']:.0%}, spearman {row['spearman']:.3f}")
    print(f"-> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
