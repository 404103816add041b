"""Command line of the hybrid-backbone NAS system.

    python launch.py --target a100 --budget 5ms [--trials 100 ...]        search (the default command), then export
    python launch.py export --study NAME [--top 5]                          re-export the winners of a stored study
    python launch.py dashboard --study NAME [--port 8080]                   optuna-dashboard on a study, 127.0.0.1
    python launch.py measure --target cpu [--archs 50]                      build / refresh a latency table here
    python launch.py measure --target cpu --check | --refit                 is it stale? / refit its correction
    python launch.py costs [--resolution 224]                               store the estimator's block counts
    python launch.py calibrate --benchmarks my-gpu.csv --target NAME        fit GPU estimates on your own GPU
    python launch.py latency SPEC.json --target a100                        predicted latency with its breakdown
    python launch.py check SPEC.json [--resolution 224]                     validate an ArchSpec file, show its cost
    python launch.py archs [--resolution 224] [--names swin_t_like ...]     params / GFLOPs of the reference archs

Errors print one line and exit with status 2. A search stopped by Ctrl-C (or SIGTERM: `kill <pid>`) stores its
finished trials, exits with 130 (143) and resumes when rerun.
"""
from __future__ import annotations

import argparse
import json
import signal
import sys
from pathlib import Path

from common.errors import UserFacingError
from launch_parser import UsageError, build_parser


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
    path = Path(args.spec)
    spec = _read_spec(args.spec)
    print(f"{path}: valid ArchSpec (schema {spec.to_dict()['schema_version']}, digest {spec.digest()})")
    print(_cost_row(spec.name or path.stem, spec, args.resolution))


def _load_space(name_or_path: str):
    from search_spaces import load_space
    return load_space(name_or_path)


def _read_spec(path_text: str):
    """The `ArchSpec` in the JSON file `path_text`; `UsageError` (one line) for anything unreadable or invalid."""
    from search_spaces import ArchSpec, SpecError
    path = Path(path_text)
    try:
        return ArchSpec.from_json(path.read_bytes().decode("utf-8"))
    except OSError as error:
        raise UsageError(f"cannot read {path}: {error.strerror or error}") from None
    except UnicodeDecodeError as error:
        raise UsageError(f"{path}: not UTF-8 text (byte {error.start}); an ArchSpec is a JSON file") from None
    except SpecError as error:
        raise UsageError(f"{path}: {error}") from None


def _open_table(args: argparse.Namespace):
    from latency_tables.table import open_table
    table = open_table(args.target, db=args.latency_db, batch=args.batch, resolution=args.resolution,
                       dtype=args.dtype, create=args.command == "measure", runtime=args.runtime)
    if args.command != "measure":
        table.require_estimable()
    return table


def cmd_measure(args: argparse.Namespace) -> None:
    from latency_tables.blocks import decompose, space_blocks
    from latency_tables.measure import quick_settings
    from latency_tables.measurer import TableMeasurer
    from latency_tables.table import LatencyTable
    from latency_tables.targets import current_device_string, get_target
    from search_spaces import REFERENCE_ARCHS, sample_archs
    space = _load_space(args.space)
    current_device_string(get_target(args.target))  # refused before any work, and before a table is created
    table = _open_table(args)
    if args.repeats is not None:  # a quicker, noisier table
        table = LatencyTable(table.target, table.db, quick_settings(table.settings, args.repeats))
    measurer = TableMeasurer(table)
    if args.check:
        _check_drift(measurer, args.check)
        return
    if args.refit:
        _refit_correction(measurer)
        return
    resolution = table.settings.resolution
    if args.archs is None:
        blocks = space_blocks(space, resolution)
        scope = f"every block of the {args.space} space"
    else:
        references = list(REFERENCE_ARCHS.values()) if args.space == "default" else []
        specs = references + sample_archs(args.archs, args.seed, space)
        blocks = [block for spec in specs for block in decompose(spec, resolution)]
        scope = (f"the blocks of {'the reference archs and ' if references else ''}{args.archs} architectures "
                 f"sampled from the {args.space} space (seed {args.seed})")
    missing = len(table.missing(blocks))
    print(f"{args.target} table {table.db.url}: {len(table.entries())} entries; measuring {missing} missing "
          f"of {scope} (batch {table.settings.batch}, {resolution}x{resolution}, {table.settings.dtype})")
    measured = measurer.measure_missing(blocks)
    print(f"measured {measured} entries; the table now has {len(table.entries())}")
    if args.networks:
        _print_fit(measurer.fit_correction(sample_archs(args.networks, args.seed + 1000, space)))


def _print_fit(fit) -> None:
    print(f"additivity correction from {fit.networks} networks measured end to end: network = "
          f"{fit.scale:.3f} x sum(blocks) + {fit.ms_per_weight_mb:.4f} ms x weights MB + "
          f"{fit.ms_per_activation_mb:.4f} ms x activations MB (median |error| "
          f"{fit.median_abs_err_before:.1%} -> {fit.median_abs_err_after:.1%})")


def _refit_correction(measurer) -> None:
    table = measurer.table
    networks = [spec for spec, _ in table.correction_networks()]
    if not networks:
        raise UsageError(f"the {table.target.name} table has no correction with stored networks to refit: fit one "
                         f"with `launch.py measure --target {table.target.name} --archs N --networks 40`")
    _print_fit(measurer.fit_correction(networks))


def _check_drift(measurer, sample: int) -> None:
    table = measurer.table
    drifts = [measurer.drift(sample), measurer.network_drift()]
    for drift in filter(None, drifts):
        stored = "stored entries" if drift.what == "entries" else "networks of its additivity correction"
        print(f"{drift.timed} {stored} timed again: now {drift.ratio:.3f}x their stored times (p20 {drift.p20:.3f}x, "
              f"p80 {drift.p80:.3f}x)")
    entries, networks = drifts
    if networks is None:
        verdict = ("within 5%: the table fits this machine now" if abs(entries.ratio - 1) <= 0.05 else
                   "the table is stale for this machine now: measure a new one (another --latency-db) to predict it")
        print(f"{table.target.name} table: {verdict} (it has no correction with stored networks to check)")
    elif abs(networks.ratio - 1) <= 0.05:
        print(f"{table.target.name} table: its networks run within 5% of their fitted times: it fits this machine now")
    else:
        print(f"{table.target.name} table: its networks run {networks.ratio:.2f}x their fitted times: refit the "
              f"correction before trusting a budget (`launch.py measure --target {table.target.name} --refit`)")


def cmd_costs(args: argparse.Namespace) -> None:
    from tqdm import tqdm

    from latency_tables.block_costs import COUNTS_FILE, store_block_costs
    from latency_tables.blocks import space_blocks
    blocks = space_blocks(_load_space(args.space), args.resolution)
    counted = store_block_costs(blocks, progress=lambda items: tqdm(items, desc="counting blocks", unit="block"))
    print(f"counted {counted} blocks of the {args.space} space at {args.resolution}x{args.resolution}; "
          f"{len(blocks) - counted} were stored already -> {COUNTS_FILE}")


def cmd_calibrate(args: argparse.Namespace) -> None:
    from tqdm import tqdm

    from latency_tables.calibration import (
        CalibrationError, Sample, fit, fit_errors, load_calibrations, store_calibrations, target_calibration_path,
    )
    from latency_tables.gpu_model import gpu_rates
    from latency_tables.targets import UnknownTargetError, get_target
    from latency_tables.timm_bench import TIMM_COUNT_BATCH, count_models, read_benchmark_csv
    try:
        target = get_target(args.target)
        rates = gpu_rates(target, "fp16")
    except (UnknownTargetError, ValueError) as error:
        raise UsageError(f"{error}; calibrate fits a GPU target with public specs") from None
    rows = read_benchmark_csv(args.benchmarks)
    print(f"{args.benchmarks}: {len(rows)} rows; counting their models on the meta device (cached)")
    counts = count_models([r.key for r in rows], progress=lambda keys: tqdm(keys, desc="counting", unit="model",
                                                                             disable=None))  # none off a terminal
    samples = [Sample(counts[r.key].profiles[args.runtime], r.batch, r.step_ms, rates, r.model) for r in rows
               if counts[r.key].profiles is not None and r.batch >= TIMM_COUNT_BATCH]
    skipped = len(rows) - len(samples)
    try:
        calibration = fit(samples, args.runtime, f"{Path(args.benchmarks).name} ({len(samples)} timm models "
                                                 f"measured on {target.name}, {args.runtime})")
    except CalibrationError as error:
        raise UsageError(f"{args.benchmarks}: {len(samples)} of {len(rows)} rows can be used ({skipped} name models "
                         f"this timm cannot build on the meta device or batch 1); {error}") from None
    errors = fit_errors(calibration, samples)
    path = target_calibration_path(target.name)
    try:
        calibrations = load_calibrations(path) if path.exists() else {}
    except CalibrationError:
        calibrations = {}  # a damaged earlier file is replaced whole
    calibrations[args.runtime] = calibration
    store_calibrations(path, calibrations, {"benchmarks": str(Path(args.benchmarks).resolve()), "rows": len(rows),
                                            "used": len(samples), "in_sample": errors})
    print(f"calibrated {target.name} ({args.runtime}) on {len(samples)} models ({skipped} skipped): in sample "
          f"{errors['within_15']:.0%} within ±15%, median |error| {errors['median_abs_error']:.1%} -> {path}")
    print(f"GPU estimates for --target {target.name} now stand on it; delete {path.name} to go back to the shipped "
          f"calibration")


def cmd_latency(args: argparse.Namespace) -> None:
    from nas.search import check_table
    spec = _read_spec(args.spec)
    table = _open_table(args)
    fit = check_table(table, args.remeasure, args.accept_stale_table)
    prediction = table.predict(spec)
    print(f"{prediction.latency_ms:.3f} ms on {prediction.target} — {prediction.source}")
    if fit is not None:
        print(f"  table check: {fit.summary}")
    for stage in prediction.stages:
        print(f"  {stage.name:<8} {stage.latency_ms:9.3f} ms  ({stage.measured_blocks} measured, "
              f"{stage.estimated_blocks} estimated blocks)")


# ------------------------------------------------------------------------------------------------- search
def _search_config(args: argparse.Namespace):
    from nas.config import SearchConfig
    return SearchConfig(target=args.target, budget_ms=args.budget, trials=args.trials, timeout_s=args.timeout,
                        workers=args.workers, ray_address=args.ray_address, sampler=args.sampler,
                        objective=args.objective, proxy=args.proxy, data=args.data, batch=args.batch,
                        resolution=args.resolution, dtype=args.dtype, runtime=args.runtime,
                        proxy_resolution=args.proxy_resolution, latency_db=args.latency_db, study=args.study,
                        storage=args.storage, out=args.out, space=args.space, seed=args.seed, top_k=args.top,
                        export=not args.no_export, onnx=args.onnx, train_steps=args.train_steps, pruner=args.pruner,
                        remeasure=args.remeasure, accept_stale_table=args.accept_stale_table)


def _print_summary(summary) -> None:
    print(f"study {summary.study!r} ({summary.status}) in {summary.storage}")
    print(f"  {summary.trials_line()}")
    if summary.best is not None:
        best = summary.best
        print(f"  best within {summary.budget_ms:g} ms on {summary.target}: trial {best['trial']}, "
              f"{best['latency_ms']:.3f} ms, proxy {summary.proxy} = {best['proxy']:.6g}, "
              f"{best['params'] / 1e6:.2f} M params, {best['flops'] / 1e9:.3f} GFLOPs")
        print(f"  latency source: {summary.latency_source}")
    for note in summary.notes:
        print(f"  note: {note}")
    for path in summary.exports:
        print(f"  exported: {path}")
    print(f"  summary: {Path(summary.out) / 'summary.json'}")


def cmd_search(args: argparse.Namespace) -> None:
    from nas.search import run_search
    summary = run_search(_search_config(args), progress=not args.quiet, announce=lambda line: print(line, flush=True))
    _print_summary(summary)


def _stored_study(args: argparse.Namespace):
    from nas.config import default_out, default_storage, default_study_file
    from nas.study import load_study
    out = args.out if args.out is not None else default_out(args.study)
    storage = args.storage or default_storage(out)
    if args.storage is None and not default_study_file(out).exists():
        raise UsageError(f"no study {args.study!r} under {out} (no {default_study_file(out)}); pass --storage or "
                         f"--out")
    return load_study(args.study, storage), out, storage


def cmd_export(args: argparse.Namespace) -> None:
    from common.files import write_json_atomic
    from nas.export import export_study
    from nas.signals import stop_on_sigterm
    study, out, storage = _stored_study(args)
    with stop_on_sigterm():  # `kill` stops it as Ctrl-C does: each folder whole, no staging left
        paths = export_study(study, out, args.top, storage, args.onnx)
    if not paths:
        raise UsageError(f"study {args.study!r} has no evaluated architecture within its budget; nothing exported")
    summary_file = Path(out) / "summary.json"
    try:
        summary = json.loads(summary_file.read_text())
    except (OSError, ValueError):
        summary = None
    if isinstance(summary, dict) and summary.get("study") == study.study_name:  # the search's summary lists these
        write_json_atomic(summary_file, {**summary, "exports": [str(path) for path in paths]})
    for path in paths:
        print(f"exported: {path}")


def cmd_dashboard(args: argparse.Namespace) -> None:
    from nas.dashboard import serve
    _, _, storage = _stored_study(args)
    serve(storage, args.study, host=args.host, port=args.port, announce=lambda line: print(line, flush=True))


INTERRUPTED = {  # what a stop (Ctrl-C, SIGTERM) left, per command
    "search": "interrupted: finished trials are stored; rerun the same command to resume",
    "export": "interrupted: each export folder is whole, the new one or the one before; rerun to export the rest",
    "measure": "interrupted: finished entries are stored; rerun the same command to measure the rest",
}

RUN = {"search": cmd_search, "export": cmd_export, "dashboard": cmd_dashboard, "measure": cmd_measure,
       "costs": cmd_costs, "calibrate": cmd_calibrate, "latency": cmd_latency, "check": cmd_check, "archs": cmd_archs}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0].startswith("-") and argv[0] not in ("-h", "--help"):
        argv.insert(0, "search")  # the default command: launch.py --target a100 --budget 5ms
    args = None
    try:
        args = build_parser().parse_args(argv)
        RUN[args.command](args)
    except UserFacingError as error:  # every floor's bad input or unusable resource
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as stop:  # Ctrl-C, or `nas.search.SearchStopped` (SIGTERM) with its signal number
        print(INTERRUPTED.get(getattr(args, "command", None), "interrupted"), file=sys.stderr)
        return 128 + getattr(stop, "signum", signal.SIGINT)
    return 0


if __name__ == "__main__":
    sys.exit(main())
