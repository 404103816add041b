"""How much does one timing of a network move on this machine, and how many passes tame it?

Times sampled networks end to end in `--passes` passes over the list (each timing is `time_network` with the
table's settings: the median of its repeats) and reports, per network, how far one pass — and the median of 3 or 4
passes (as `time_networks` takes it) — lands from the median of all passes, and its slowest pass over its fastest. No table can predict a
network closer than its own timings agree.

    python benchmarks/timing_noise.py --target cpu --archs 10 --passes 8
        -> benchmarks/results/timing-noise-cpu.json
"""
from __future__ import annotations

import argparse
import itertools
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from benchmarks._io import write_json_atomic  # noqa: E402
from benchmarks._timing import timing_setup  # noqa: E402
from latency_tables.measure import time_networks  # noqa: E402
from search_spaces import DEFAULT_SPACE, sample_archs  # noqa: E402


def deviation_of_medians(per_pass: list[float], group: int) -> float:
    """Median over every choice of `group` passes of |their median - median of all| / median of all."""
    overall = statistics.median(per_pass)
    return statistics.median(abs(statistics.median(chosen) - overall) / overall
                             for chosen in itertools.combinations(per_pass, group))


def summarise(rows: list[dict], passes: int) -> dict:
    """Medians over networks of the deviation of 1, 3, 4 passes' median from the median of all passes."""
    out = {}
    for group in (1, 3, 4):
        if group < passes:
            out[f"deviation_{group}_pass"] = statistics.median(deviation_of_medians(r["pass_ms"], group)
                                                               for r in rows)
    out["max_over_min_pass_median"] = statistics.median(max(r["pass_ms"]) / min(r["pass_ms"]) for r in rows)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", default="cpu")
    parser.add_argument("--archs", type=int, default=10)
    parser.add_argument("--passes", type=int, default=8)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--resolution", type=int)
    parser.add_argument("--repeats", type=int, help="exactly this many timed repeats (quick, noisier runs)")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    if args.passes < 2:
        parser.error("--passes must be at least 2")
    target, device_string, device, settings = timing_setup(args.target, args.resolution, args.repeats)
    specs = sample_archs(args.archs, args.seed, DEFAULT_SPACE)
    pass_ms: list[list[float]] = [[] for _ in specs]

    def record(pass_index: int, i: int, ms: float) -> None:
        pass_ms[i].append(ms)
        if i == len(specs) - 1:
            print(f"pass {pass_index + 1}/{args.passes}: " + " ".join(f"{p[-1]:.1f}" for p in pass_ms), flush=True)
    started = time.perf_counter()
    time_networks(specs, settings, device, args.passes, record)
    rows = [dict(digest=spec.digest(), pass_ms=[round(t, 4) for t in times],
                 cv=round(float(np.std(times) / np.mean(times)), 4)) for spec, times in zip(specs, pass_ms)]
    result = {"target": target.name, "device": device_string, "archs": len(rows), "passes": args.passes,
              "seconds": round(time.perf_counter() - started, 1), **summarise(rows, args.passes),
              "settings": settings.to_dict(), "date": time.strftime("%Y-%m-%d"), "rows": rows}
    out = args.out or ROOT / f"benchmarks/results/timing-noise-{target.name}.json"
    write_json_atomic(out, result)
    print(" ".join(f"{k} {v:.3f}" for k, v in result.items() if k.startswith(("deviation", "max_over"))) + f" -> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
