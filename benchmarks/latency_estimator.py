"""How good is the roofline estimator? Fit it on half of a table's measured entries, predict the other half.

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
from latency_tables.estimate import block_cost, calibrate  # noqa: E402
from latency_tables.predict import _block_from_key, open_table  # noqa: E402


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
    samples = [(block_cost(_block_from_key(key, shape), table.settings.batch, table.settings.dtype), m.median_ms)
               for (key, shape), m in items]
    half = len(samples) // 2
    fit = calibrate(samples[:half], table.target.name)
    predicted = [fit.predict_ms(cost) for cost, _ in samples[half:]]
    measured = [ms for _, ms in samples[half:]]
    errors = [abs(p - m) / m for p, m in zip(predicted, measured)]
    result = {
        "target": table.target.name, "entries_fit": half, "entries_predicted": len(errors),
        "median_abs_rel_err": statistics.median(errors), "p90_abs_rel_err": float(np.percentile(errors, 90)),
        "within_10pct": sum(e <= 0.10 for e in errors) / len(errors),
        "within_25pct": sum(e <= 0.25 for e in errors) / len(errors),
        "spearman": spearman(predicted, measured),
        "fit": {"flops_per_s": fit.flops_per_s, "bytes_per_s": fit.bytes_per_s, "op_s": fit.op_s},
        "seconds": round(time.perf_counter() - started, 1), "date": time.strftime("%Y-%m-%d"),
    }
    out = args.out or ROOT / f"benchmarks/results/latency-estimator-{table.target.name}.json"
    write_json_atomic(out, result)
    print(f"fit on {half} entries, predicted {len(errors)}: median |err| {result['median_abs_rel_err']:.1%}, "
          f"p90 {result['p90_abs_rel_err']:.1%}, within 25% {result['within_25pct']:.0%}, spearman "
          f"{result['spearman']:.3f} -> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
