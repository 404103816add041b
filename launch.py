"""Command line of the hybrid-backbone NAS system.

    python launch.py archs [--resolution 224] [--names swin_t_like ...]   params / GFLOPs of the reference archs
    python launch.py check SPEC.json [--resolution 224]                    validate an ArchSpec file, show its cost
    python launch.py measure --target cpu [--archs 50]                     build / refresh a latency table here
    python launch.py latency SPEC.json --target a100                       predicted latency with its breakdown

The search itself (``python launch.py --target a100 --budget 5ms``), ``dashboard`` and ``export`` arrive with the
search orchestration. Errors print one line and exit with status 2.
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


def _read_spec(path_text: str):
    from search_spaces import ArchSpec, SpecError
    path = Path(path_text)
    try:
        return ArchSpec.from_json(path.read_text())
    except OSError as error:
        raise UsageError(f"cannot read {path}: {error.strerror or error}") from None
    except SpecError as error:
        raise UsageError(f"{path}: {error}") from None


def _open_table(args: argparse.Namespace):
    from latency_tables.estimate import EstimationError
    from latency_tables.predict import open_table
    from latency_tables.storage import LatencyDBError
    from latency_tables.targets import UnknownTargetError
    try:
        return open_table(args.target, db=args.latency_db, batch=args.batch, resolution=args.resolution,
                          dtype=args.dtype, create=args.command == "measure")
    except (UnknownTargetError, LatencyDBError, EstimationError, ValueError) as error:
        raise UsageError(str(error)) from None


def cmd_measure(args: argparse.Namespace) -> None:
    from latency_tables.blocks import decompose, space_blocks
    from latency_tables.storage import LatencyDBError
    from latency_tables.targets import TargetUnavailableError, current_device_string
    from search_spaces import DEFAULT_SPACE, REFERENCE_ARCHS, sample_archs
    table = _open_table(args)
    try:
        current_device_string(table.target)  # refuse before any work on a machine without the target's device
    except TargetUnavailableError as error:
        raise UsageError(str(error)) from None
    resolution = table.settings.resolution
    if args.archs is None:
        blocks = space_blocks(DEFAULT_SPACE, resolution)
        scope = "every block of the space"
    else:
        specs = list(REFERENCE_ARCHS.values()) + sample_archs(args.archs, args.seed)
        blocks = [block for spec in specs for block in decompose(spec, resolution)]
        scope = f"the blocks of the reference archs and {args.archs} sampled ones (seed {args.seed})"
    missing = len(table.missing(blocks))
    print(f"{args.target} table {table.db.url}: {len(table.entries())} entries; measuring {missing} missing "
          f"of {scope} (batch {table.settings.batch}, {resolution}x{resolution}, {table.settings.dtype})")
    try:
        measured = table.measure_missing(blocks)
    except (TargetUnavailableError, LatencyDBError) as error:
        raise UsageError(str(error)) from None
    print(f"measured {measured} entries; the table now has {len(table.entries())}")
    if args.networks:
        networks = sample_archs(args.networks, args.seed + 1000)
        fit = table.fit_correction(networks)
        print(f"additivity correction from {fit.networks} networks measured end to end: network = "
              f"{fit.scale:.3f} x sum(blocks) + {fit.per_block_ms:.4f} ms x blocks (median |error| "
              f"{fit.median_abs_err_before:.1%} -> {fit.median_abs_err_after:.1%})")


def cmd_latency(args: argparse.Namespace) -> None:
    spec = _read_spec(args.spec)
    prediction = _open_table(args).predict(spec)
    print(f"{prediction.latency_ms:.3f} ms on {prediction.target} — {prediction.source}")
    for stage in prediction.stages:
        print(f"  {stage.name:<8} {stage.latency_ms:9.3f} ms  ({stage.measured_blocks} measured, "
              f"{stage.estimated_blocks} estimated blocks)")


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
    measure = commands.add_parser("measure", help="measure the missing entries of a latency table on this machine")
    _table_flags(measure)
    measure.add_argument("--archs", type=_positive_int, help="only the blocks of the reference architectures and "
                         "this many sampled ones (default: every block of the space, which takes hours on a CPU)")
    measure.add_argument("--seed", type=int, default=0, help="seed of the sampled architectures (with --archs)")
    measure.add_argument("--networks", type=int, default=40, help="networks (sampled with seed + 1000) to measure "
                         "end to end to fit the table's additivity correction; 0 skips it")
    measure.set_defaults(run=cmd_measure)
    latency = commands.add_parser("latency", help="predicted latency of an ArchSpec file with its breakdown")
    latency.add_argument("spec", help="path of an ArchSpec JSON file")
    _table_flags(latency)
    latency.set_defaults(run=cmd_latency)
    return parser


def _table_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--target", required=True, help="latency target: cpu, a100, h100, h200, l4, a10g, t4, "
                        "rtx3090, rtx4090, rtx5090")
    parser.add_argument("--latency-db", help="SQLAlchemy URL or sqlite path of the table (default: the table "
                        "shipped in latency_tables/data/<target>.sqlite)")
    parser.add_argument("--batch", type=_positive_int, help="batch size (default 1)")
    parser.add_argument("--resolution", type=_positive_int, help="square input size in pixels (default 224)")
    parser.add_argument("--dtype", choices=("fp32", "fp16", "bf16"), help="default: bf16 on GPUs, fp32 on cpu")


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
