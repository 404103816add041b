"""Params and GFLOPs of the reference architectures (fvcore, 224x224) next to their papers' numbers.

    python benchmarks/reference_archs.py            # writes benchmarks/results/reference-archs.json
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks._io import write_json_atomic  # noqa: E402
from search_spaces import REFERENCE_ARCHS, count_flops, count_params  # noqa: E402

# (params in millions, GFLOPs = G multiply-adds at 224x224) as published by each paper / repository.
PUBLISHED = {
    "swin_t_like": ("Swin-T", 28.3, 4.5),
    "convnext_t_like": ("ConvNeXt-T", 28.6, 4.5),
    "l2vit_t_like": ("L2ViT-T", 29.0, 4.7),
    "cswin_t_like": ("CSWin-T", 23.0, 4.3),
    "shvit_s1_like": ("SHViT-S1", 6.3, 0.241),
    "qna_t_like": ("QnA-ViT-T", 16.0, 2.5),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/reference-archs.json")
    args = parser.parse_args(argv)
    rows = []
    print(f"{'architecture':<16} {'params(M)':>9} {'paper':>6} {'GFLOPs':>7} {'paper':>6}  paper model")
    for name, spec in REFERENCE_ARCHS.items():
        paper, paper_params, paper_gflops = PUBLISHED[name]
        params_m, gflops = count_params(spec) / 1e6, count_flops(spec, resolution=224) / 1e9
        rows.append(dict(name=name, paper_model=paper, params_m=round(params_m, 3), paper_params_m=paper_params,
                         gflops=round(gflops, 4), paper_gflops=paper_gflops))
        print(f"{name:<16} {params_m:>9.2f} {paper_params:>6.1f} {gflops:>7.3f} {paper_gflops:>6.3f}  {paper}")
    write_json_atomic(args.out, {"resolution": 224, "flops_unit": "multiply-adds (fvcore)", "archs": rows})
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
