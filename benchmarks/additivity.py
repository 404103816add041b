"""Why does a network run slower than the sum of its blocks timed alone? (The evidence for the additivity model.)

1. For sampled networks, time each network end to end and each of its blocks alone, back to back (same machine
   state, same settings as the table), and relate network / sum(blocks) to the network's weights in MB.
2. For the first network, time its blocks alone again with more and more memory written between repeats
   (16 MB ... 1 GB: weights from the last-level cache ... from DRAM) and compare with the network.

    python benchmarks/additivity.py --target cpu --archs 12    -> benchmarks/results/additivity-cpu.json
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from benchmarks._io import spearman, write_json_atomic  # noqa: E402
from benchmarks._timing import timing_setup  # noqa: E402
from latency_tables.blocks import decompose  # noqa: E402
from latency_tables.measure import quick_settings, time_block, time_network  # noqa: E402
from latency_tables.correction import weights_mb  # noqa: E402
from search_spaces import DEFAULT_SPACE, sample_archs  # noqa: E402

FLUSH_MB = (16, 64, 256, 1024)


def _blocks_ms(blocks, settings, device) -> float:
    return sum(time_block(b, settings, device).median_ms for b in blocks)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", default="cpu")
    parser.add_argument("--archs", type=int, default=12)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--resolution", type=int)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--repeats", type=int, help="exactly this many timed repeats (quick, noisier runs)")
    args = parser.parse_args(argv)
    target, device_string, device, settings = timing_setup(args.target, args.resolution, args.repeats)
    specs = sample_archs(args.archs, args.seed, DEFAULT_SPACE)
    rows = []
    for i, spec in enumerate(specs):
        blocks = decompose(spec, settings.resolution)
        network = time_network(spec, settings, device).median_ms
        alone = _blocks_ms(blocks, settings, device)
        rows.append(dict(digest=spec.digest(), network_ms=round(network, 4), blocks_alone_ms=round(alone, 4),
                         ratio=round(network / alone, 4),
                         weights_mb=round(weights_mb(blocks, settings.dtype), 3)))
        print(f"[{i + 1:>2}/{len(specs)}] network {network:8.3f} ms  blocks alone {alone:8.3f} ms  ratio "
              f"{network / alone:.3f}  weights {rows[-1]['weights_mb']:6.1f} MB", flush=True)
    weights, ratios = [r["weights_mb"] for r in rows], [r["ratio"] for r in rows]
    slope, intercept = np.polyfit(weights, ratios, 1)
    sweep = {}
    if device.type == "cpu":  # GPUs flush their L2 in do_bench already
        blocks = decompose(specs[0], settings.resolution)
        quick = quick_settings(settings, min(settings.max_repeats, 10))
        sweep = {"network_ms": round(time_network(specs[0], settings, device).median_ms, 4)}
        for flush_mb in FLUSH_MB:
            total = _blocks_ms(blocks, dataclasses.replace(quick, flush_cache_mb=flush_mb), device)
            sweep[f"blocks_alone_ms_flush_{flush_mb}mb"] = round(total, 4)
            print(f"flush {flush_mb:>5} MB between repeats: blocks alone {total:8.3f} ms "
                  f"(network {sweep['network_ms']:.3f} ms)", flush=True)
    result = {"target": target.name, "device": device_string, "archs": len(rows),
              "ratio": {"min": min(ratios), "median": float(np.median(ratios)), "max": max(ratios)},
              "ratio_vs_weights_mb": {"spearman": spearman(weights, ratios), "slope_per_mb": float(slope),
                                      "intercept": float(intercept)},
              "flush_sweep_first_arch": sweep, "settings": settings.to_dict(), "date": time.strftime("%Y-%m-%d"),
              "rows": rows}
    out = args.out or ROOT / f"benchmarks/results/additivity-{target.name}.json"
    write_json_atomic(out, result)
    print(f"network / blocks alone: median {result['ratio']['median']:.3f} ({min(ratios):.3f}-{max(ratios):.3f}); "
          f"vs weights MB: spearman {result['ratio_vs_weights_mb']['spearman']:.2f}, slope {slope:.4f}/MB -> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
