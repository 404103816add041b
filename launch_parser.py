"""The command line's parser: every command's flags, their types and help, with no heavy import (torch, Optuna,
Ray load only when a command runs), so `--help` and bad flags answer at once. `launch.py` runs the commands."""
from __future__ import annotations

import argparse
from pathlib import Path

from common.dtypes import DTYPES
from common.errors import UserFacingError

__all__ = ["UsageError", "build_parser", "COMMANDS"]

COMMANDS = ("search", "export", "dashboard", "measure", "costs", "calibrate", "latency", "check", "archs")


class UsageError(UserFacingError):
    """Bad input to the command line itself (flags, files named on it)."""


def _int_at_least(minimum: int, expected: str, maximum: int | None = None):
    """An argparse type: an integer in [`minimum`, `maximum`], else "expected <expected>, got ..."."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None
        if value < minimum or (maximum is not None and value > maximum):
            raise argparse.ArgumentTypeError(f"expected {expected}, got {value}")
        return value
    return parse


def _resolution(text: str) -> int:
    from search_spaces import MAX_RESOLUTION, MIN_RESOLUTION
    return _int_at_least(MIN_RESOLUTION, f"a size of {MIN_RESOLUTION}-{MAX_RESOLUTION} pixels", MAX_RESOLUTION)(text)


_positive_int = _int_at_least(1, "a positive integer")
_non_negative_int = _int_at_least(0, "an integer >= 0")


def _correction_networks(text: str) -> int:
    from latency_tables.correction import MIN_CORRECTION_NETWORKS
    value = _non_negative_int(text)
    if 0 < value < MIN_CORRECTION_NETWORKS:  # refused before any block is measured, not after
        raise argparse.ArgumentTypeError(f"expected 0 (no correction) or at least {MIN_CORRECTION_NETWORKS} networks "
                                         f"to fit the correction's terms on, got {value}")
    return value


def _budget(text: str) -> float:
    from nas.config import ConfigError, parse_latency_ms
    try:
        return parse_latency_ms(text)
    except ConfigError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number of seconds, got {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a positive number of seconds, got {text!r}")
    return value


def _port(text: str) -> int:
    value = _non_negative_int(text)
    if not 1 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"expected a port number 1-65535, got {value}")
    return value


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line and exit 2, without the usage block
        raise UsageError(message)




def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="launch.py", description="Hardware-aware NAS for hybrid vision backbones. Without a "
                     "command, searches: python launch.py --target a100 --budget 5ms (see: launch.py search -h).")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    search = commands.add_parser("search", help="search the space under a latency budget, then export the winners "
                                 "(the default command)")
    _search_flags(search)
    export = commands.add_parser("export", help="export the best and Pareto architectures of a stored study")
    _stored_study_flags(export)
    export.add_argument("--top", type=_non_negative_int, default=5, help="Pareto architectures to export besides "
                        "the best one (default 5)")
    _onnx_flag(export)
    dashboard = commands.add_parser("dashboard", help="serve optuna-dashboard on a study's storage")
    _stored_study_flags(dashboard)
    dashboard.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1; the dashboard "
                           "has no authentication)")
    dashboard.add_argument("--port", type=_port, default=8080, help="TCP port (default 8080)")
    measure = commands.add_parser("measure", help="measure the missing entries of a latency table on this machine")
    _table_flags(measure)
    measure.add_argument("--archs", type=_positive_int, help="only the blocks of the reference architectures and "
                         "this many sampled ones (default: every block of the space, which takes hours on a CPU)")
    measure.add_argument("--seed", type=int, default=0, help="seed of the sampled architectures (with --archs)")
    measure.add_argument("--repeats", type=_positive_int, help="timed repeats per block and network (default: "
                         "10, and more until 0.3 s were timed); fewer is quicker and noisier")
    measure.add_argument("--networks", type=_correction_networks, default=40, help="networks (sampled with seed + "
                         "1000) to measure end to end to fit the table's additivity correction; 0 skips it")
    measure.add_argument("--check", type=_positive_int, nargs="?", const=24, metavar="BLOCKS",
                         help="measure nothing: time this many stored entries (default 24) and 8 of the correction's "
                         "networks again and say how far this machine now runs from the table")
    measure.add_argument("--refit", action="store_true", help="measure no block: time the correction's networks "
                         "end to end again and refit it (a minute or two on a CPU)")
    _space_flag(measure)
    costs = commands.add_parser("costs", help="count the kernels, params and FLOPs of every block of the space "
                                "once, for the estimates of blocks no table has measured and the lookup proxies")
    costs.add_argument("--resolution", type=_resolution, default=224, help="square input size in pixels")
    _space_flag(costs)
    calibrate = commands.add_parser("calibrate", help="fit the GPU estimates of a target on timm's benchmark.py run "
                                    "on that GPU (a CSV of `python benchmark.py --bench inference --amp "
                                    "--results-file my-gpu.csv`)")
    calibrate.add_argument("--benchmarks", required=True, help="the CSV timm's benchmark.py wrote")
    calibrate.add_argument("--target", required=True, help="the GPU target it was run on (a100, h100, l4...)")
    calibrate.add_argument("--runtime", choices=("eager", "compiled"), default="eager", help="how the CSV was run: "
                           "eager, or compiled (benchmark.py --torchcompile); default eager")
    latency = commands.add_parser("latency", help="predicted latency of an ArchSpec file with its breakdown")
    latency.add_argument("spec", help="path of an ArchSpec JSON file")
    _table_flags(latency)
    _stale_table_flags(latency)
    check = commands.add_parser("check", help="validate an ArchSpec JSON file and print its params and GFLOPs")
    check.add_argument("spec", help="path of an ArchSpec JSON file (as written by ArchSpec.to_json)")
    check.add_argument("--resolution", type=_resolution, default=224, help="square input size in pixels")
    archs = commands.add_parser("archs", help="params and GFLOPs of the reference architectures")
    archs.add_argument("--resolution", type=_resolution, default=224, help="square input size in pixels")
    archs.add_argument("--names", nargs="+", help="only these architectures (default: all)")
    return parser


def _search_flags(parser: argparse.ArgumentParser) -> None:
    from nas.config import AUTO_TPE_MAX_TRIALS, OBJECTIVES, PRUNERS, SAMPLERS
    from nas.proxies import PROXIES
    _table_flags(parser)
    _stale_table_flags(parser)
    parser.add_argument("--budget", type=_budget, required=True, help="latency budget per batch on the target: "
                        "5ms, 5.5ms or 800us")
    parser.add_argument("--trials", type=_positive_int, default=100, help="total trials of the study (a resumed "
                        "study runs only the missing ones; default 100)")
    parser.add_argument("--timeout", type=_positive_float, help="seconds after which no new trial starts (running "
                        "ones finish); default none")
    parser.add_argument("--workers", type=_positive_int, default=2, help="evaluations in flight, one CPU each "
                        "(default 2)")
    parser.add_argument("--ray-address", help="address of a running Ray cluster (host:port); default: start a "
                        "local Ray for this search")
    parser.add_argument("--sampler", choices=SAMPLERS, default="auto",
                        help=f"Optuna sampler (default auto: TPE up to {AUTO_TPE_MAX_TRIALS} trials, NSGA-II beyond, "
                             f"whose ask stays ~1 ms where TPE's grows with the study; "
                             f"benchmarks/sampler_efficiency.py)")
    parser.add_argument("--objective", choices=OBJECTIVES, help="best: maximise the proxy within the budget; "
                        "pareto: proxy up and latency_ms down (default: pareto with nsga2, else best)")
    parser.add_argument("--proxy", choices=tuple(PROXIES), help="accuracy proxy (default: meco with "
                        "--data, flops without; chosen by benchmarks/proxy_quality.py)")
    parser.add_argument("--data", type=Path, help="images for the data proxies: an ImageFolder directory, a "
                        "CIFAR-10 python batch folder or an .npz (x uint8 NHWC, y int); default none")
    parser.add_argument("--proxy-resolution", type=_resolution, help="proxies' input size in pixels (default: "
                        "the data's image size, at least 64; without data, --resolution)")
    parser.add_argument("--train-steps", type=_positive_int, default=300, help="steps of the short_train proxy "
                        "(default 300)")
    parser.add_argument("--pruner", choices=PRUNERS, default="median", help="stop short_train evaluations whose "
                        "accuracy after 100, 200... steps is below the median of earlier trials' (default median; "
                        "single objective only)")
    parser.add_argument("--study", help="study name (default <target>-<budget>-<sampler>-<proxy>); rerunning with "
                        "the same name resumes it")
    parser.add_argument("--storage", help="Optuna storage, any SQLAlchemy URL (default sqlite:///<out>/study.db)")
    parser.add_argument("--out", type=Path, help="output folder for summary.json and exports/ (default "
                        "runs/<study>)")
    parser.add_argument("--seed", type=int, default=0, help="sampler and proxy seed (default 0)")
    _space_flag(parser)
    parser.add_argument("--top", type=_non_negative_int, default=5, help="Pareto architectures to export besides "
                        "the best one (default 5)")
    parser.add_argument("--no-export", action="store_true", help="don't export at the end (launch.py export can, "
                        "later)")
    _onnx_flag(parser)
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def _onnx_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--onnx", action=argparse.BooleanOptionalAction, default=True, help="write each export's "
                        "model.onnx, checked with onnxruntime (default; --no-onnx skips it, seconds an export)")


def _stale_table_flags(parser: argparse.ArgumentParser) -> None:
    stale = parser.add_mutually_exclusive_group()
    stale.add_argument("--remeasure", action="store_true", help="cpu target: if the table does not fit this "
                       "machine now (a few stored entries timed again are >25%% off), time all of it again here "
                       "first (it says how long)")
    stale.add_argument("--accept-stale-table", action="store_true", help="cpu target: use a table that does not "
                       "fit this machine anyway, labelled stale in the summary and model cards")


def _space_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--space", default="default", help="search space: default (ImageNet-scale), cifar (32x32 "
                        "images), or a JSON file declaring one, e.g. {\"base\": \"cifar\", \"mixers\": [\"conv\", "
                        "\"window\"]} (default: default)")


def _stored_study_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--study", required=True, help="study name, as the search printed it")
    parser.add_argument("--storage", help="Optuna storage URL (default sqlite:///<out>/study.db)")
    parser.add_argument("--out", type=Path, help="the search's output folder (default runs/<study>); exports go "
                        "to <out>/exports/<study>/")


def _table_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--target", required=True, help="latency target: cpu, a100, h100, h200, l4, a10g, t4, "
                        "rtx3090, rtx4090, rtx5090")
    parser.add_argument("--latency-db", help="SQLAlchemy URL or sqlite path of the table (default: the table "
                        "shipped in latency_tables/data/<target>.sqlite)")
    parser.add_argument("--batch", type=_positive_int, help="batch size (default 1)")
    parser.add_argument("--resolution", type=_resolution, help="square input size in pixels (default 224)")
    parser.add_argument("--dtype", choices=DTYPES, help="default: bf16 on GPUs, fp32 on cpu")
    parser.add_argument("--runtime", choices=("eager", "compiled"), help="how the target runs the network: eager "
                        "PyTorch or torch.compile (default: compiled on GPUs, the closest to the Triton kernels "
                        "deployed; eager on cpu)")
