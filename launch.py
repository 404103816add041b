"""Command line of the hybrid-backbone NAS system.

    python launch.py archs [--resolution 224] [--names swin_t_like ...]   params / GFLOPs of the reference archs
    python launch.py check SPEC.json [--resolution 224]                    validate an ArchSpec file, show its cost

The search itself (``python launch.py --target a100 --budget 5ms``), ``measure``, ``dashboard`` and ``export``
arrive with the latency tables and the search orchestration. Errors print one line and exit with status 2.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path


class UsageError(Exception):
    """Bad input from the user: printed as one line, exit status 2."""


def _cost_row(name: str, spec, resolution: int) -> str:
    from search_spaces import count_flops, count_params
    params_m = count_params(spec) / 1e6
    gflops = count_flops(spec, resolution=resolution) / 1e9
    mixers = "/".join(stage.mixer.kind for stage in spec.stages)
    return f"{name:<18} {params_m:>9.2f} {gflops:>8.3f}  {mixers}"


def cmd_archs(args: argparse.Namespace) -> None:
    from search_spaces import REFERENCE_ARCHS
    names = args.names or sorted(REFERENCE_ARCHS)
    unknown = [n for n in names if n not in REFERENCE_ARCHS]
    if unknown:
        raise UsageError(f"unknown architecture(s) {', '.join(unknown)}; known: {', '.join(sorted(REFERENCE_ARCHS))}")
    print(f"{'architecture':<18} {'params(M)':>9} {'GFLOPs':>8}  mixers   (FLOPs = multiply-adds at "
          f"{args.resolution}x{args.resolution}, fvcore)")
    for name in names:
        print(_cost_row(name, REFERENCE_ARCHS[name], args.resolution))


def cmd_check(args: argparse.Namespace) -> None:
    from search_spaces import ArchSpec, SpecError
    path = Path(args.spec)
    try:
        text = path.read_text()
    except OSError as error:
        raise UsageError(f"cannot read {path}: {error.strerror or error}") from None
    try:
        spec = ArchSpec.from_json(text)
    except SpecError as error:
        raise UsageError(f"{path}: {error}") from None
    print(f"{path}: valid ArchSpec (schema {spec.to_dict()['schema_version']}, digest {spec.digest()})")
    print(_cost_row(spec.name or path.stem, spec, args.resolution))


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line and exit 2, without the usage block
        raise UsageError(message)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="launch.py", description="Hardware-aware NAS for hybrid vision backbones.")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    archs = commands.add_parser("archs", help="params and GFLOPs of the reference architectures")
    archs.add_argument("--resolution", type=_positive_int, default=224, help="square input size in pixels")
    archs.add_argument("--names", nargs="+", help="only these architectures (default: all)")
    archs.set_defaults(run=cmd_archs)
    check = commands.add_parser("check", help="validate an ArchSpec JSON file and print its params and GFLOPs")
    check.add_argument("spec", help="path of an ArchSpec JSON file (as written by ArchSpec.to_json)")
    check.add_argument("--resolution", type=_positive_int, default=224, help="square input size in pixels")
    check.set_defaults(run=cmd_check)
    return parser


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        args.run(args)
    except UsageError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
