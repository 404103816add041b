"""The search driver: Optuna ask/tell in this process, evaluations as Ray tasks, the budget as a constraint.

Per trial: the sampler proposes an architecture (`search_spaces.sample_arch`), its latency is looked up in the
target's table (`latency_tables`) before anything runs, and then

- over budget -> told PRUNED at once (constraint > 0), no worker time spent;
- an architecture already evaluated (same `ArchSpec.digest`) -> told the earlier result, marked ``duplicate_of``;
- otherwise a Ray task (`nas.evaluate.evaluate`) scores it; `workers` tasks are kept in flight and results are
  told as they finish. A failed evaluation (exception, non-finite score, out of memory, lost worker) is a FAIL
  trial with its reason, and the search goes on. A ``short_train`` evaluation reports its accuracy every 100
  steps; the driver answers with its pruner's verdict (`nas.pruning`) and a stopped one is told PRUNED.

Sampling runs on an in-memory copy of the study and each finished trial is stored in one transaction
(`nas.study.StudyMirror`). Interrupted (Ctrl-C), the driver stores its in-flight trials as FAIL ("interrupted")
and writes the summary; rerunning the same command resumes the study and queues those architectures first.
SIGTERM (`kill`, a job scheduler) stops it the same way. A driver killed outright (SIGKILL) loses only its
in-flight evaluations.

Here: preparing a run (config, table, data, study) and `run_search`; the loop is `nas.driver`, stopping on
signals `nas.signals`, the Ray session `nas.ray_session`, the summary `nas.summary`.
"""
from __future__ import annotations

import contextlib
import logging
import shlex
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import optuna

from common.errors import UserFacingError
from common.files import ensure_folder, write_json_atomic
from latency_tables import (EstimationError, LatencyDBError, LatencyTable, TableMeasurer, TargetUnavailableError,
                            UnknownTargetError, open_table)
from latency_tables.freshness import TableFit, about, check_fit, remeasure_seconds
from nas.config import ConfigError, SearchConfig
from nas.data import load_data
from nas.driver import Driver, Evaluator, sampler_seed
from nas.evaluate import ProxyData, evaluate
from nas.export import export_study
from nas.proxies import DATA_FREE, PROXIES
from nas.pruning import make_pruner
from nas.ray_session import check_ray_address, ray_session
from nas.signals import SearchStopped, deferred_stops, stop_on_sigterm
from nas.study import StudyMirror, make_sampler, open_study
from nas.summary import SearchSummary, counts_towards_trials, summarise
from nas.trial_record import records
from search_spaces import SearchSpace, SpaceError, load_space

__all__ = ["SearchError", "SearchStopped", "SearchSummary", "run_search", "stop_on_sigterm", "deferred_stops",
           "prepare", "summarise", "ray_session", "Prepared"]

_log = logging.getLogger(__name__)



class SearchError(UserFacingError, RuntimeError):
    """The search cannot start or go on (Ray unreachable, latency table unusable...); one line says why."""


# ------------------------------------------------------------------------------------------------- helpers
def check_table(table: LatencyTable, remeasure: bool, accept_stale: bool, progress: bool = True,
                announce: Callable[[str], None] | None = None) -> TableFit | None:
    """Check that a CPU table fits this machine now (`latency_tables.freshness.check_fit`); None where there is
    nothing to check. A table that does not fit is timed again here with `remeasure`, kept and labelled stale
    with `accept_stale`, and otherwise refused: `ConfigError` naming both ways on."""
    say = announce or (lambda line: None)
    try:
        if table.target.kind == "cpu" and table.entries():
            say(f"checking that the {table.target.name} table fits this machine (a few seconds)")
        fit = check_fit(table)
    except TargetUnavailableError as error:
        raise ConfigError(str(error)) from None
    if fit is None or fit.fits:
        if fit is not None:
            say(fit.summary)
        return fit
    if remeasure:
        say(f"{fit.summary}; --remeasure: timing its {len(table.entries())} entries and "
            f"{len(table.correction_networks())} correction networks again here, {about(remeasure_seconds(table))}")
        try:
            TableMeasurer(table).remeasure(progress)
        except LatencyDBError as error:
            raise ConfigError(str(error)) from None
        return TableFit(True, f"{fit.summary}; re-measured on this machine (--remeasure)", fit.entries, fit.networks)
    if accept_stale:
        stale = TableFit(False, f"STALE: {fit.summary}; used anyway (--accept-stale-table)", fit.entries,
                         fit.networks)
        say(stale.summary)
        return stale
    raise ConfigError(f"{fit.summary}: its latencies would be off by that much. Rerun with --remeasure to time it "
                      f"again here ({about(remeasure_seconds(table))}), --accept-stale-table to search on "
                      f"it anyway, or --latency-db a table measured here (launch.py measure)")


def _check_proxy(config: SearchConfig) -> None:
    proxy = PROXIES.get(config.proxy)
    if proxy is None:
        raise ConfigError(f"unknown proxy {config.proxy!r}; known proxies: {', '.join(PROXIES)}")
    if proxy.needs_data and config.data is None:
        raise ConfigError(f"proxy {config.proxy!r} needs images: pass --data (or a data-free proxy: "
                          f"{', '.join(DATA_FREE)})")


def _open_latency_table(config: SearchConfig) -> LatencyTable:
    try:
        table = open_table(config.target, db=config.latency_db, batch=config.batch, resolution=config.resolution,
                           dtype=config.dtype, create=False, runtime=config.runtime)
        table.require_estimable()
        return table
    except (UnknownTargetError, LatencyDBError, EstimationError, ValueError) as error:
        raise ConfigError(str(error)) from None


def _proxy_data(config: SearchConfig) -> ProxyData | None:
    if config.data is None:
        return None
    data = load_data(config.data)  # DataError: one line naming the path
    return ProxyData(data.x_train, data.y_train, data.x_test, data.y_test, data.num_classes)


def _study_attrs(config: SearchConfig, table: LatencyTable, proxy_resolution: int, space: SearchSpace) -> dict:
    settings = table.settings
    return {"space": space.to_dict(), "target": config.target, "budget_ms": float(config.budget_ms),
            "objective": config.objective, "proxy": config.proxy, "sampler": config.sampler, "batch": settings.batch,
            "resolution": settings.resolution, "dtype": settings.dtype, "runtime": settings.runtime,
            "proxy_resolution": proxy_resolution, "latency_table": table.db.url,
            "data": str(config.data) if config.data else None, "seed": config.seed,
            "command": "python " + shlex.join(sys.argv) if sys.argv and sys.argv[0] else None}


def _missing_folders(path: Path) -> list[Path]:
    """`path` and those of its parents that do not exist yet, deepest first."""
    missing = []
    while not path.exists() and path != path.parent:
        missing.append(path)
        path = path.parent
    return missing


@dataclass(frozen=True)
class Prepared:
    """What a checked config needs, loaded before any study is touched."""
    config: SearchConfig  # resolved
    table: LatencyTable
    data: ProxyData | None
    proxy_resolution: int
    space: SearchSpace


def _space(config: SearchConfig) -> SearchSpace:
    if isinstance(config.space, SearchSpace):
        return config.space
    try:
        return load_space(config.space)
    except SpaceError as error:
        raise ConfigError(str(error)) from None


def prepare(config: SearchConfig) -> Prepared:
    """Check a config and load what it needs, before any study is touched. Raises `ConfigError` or `DataError`
    with one line. The data proxies see the data's image size, upsampled to at least the space's
    ``proxy_resolution``; the data-free ones the deployment input size."""
    config = config.resolved()
    space = _space(config)
    _check_proxy(config)
    table = _open_latency_table(config)
    data = _proxy_data(config)
    if config.proxy_resolution is not None:
        proxy_resolution = config.proxy_resolution
    elif data is not None:
        proxy_resolution = max(space.proxy_resolution, int(data.x_train.shape[1]))
    else:
        proxy_resolution = table.settings.resolution
    return Prepared(config, table, data, proxy_resolution, space)


def run_search(config: SearchConfig, evaluator: Evaluator = evaluate, progress: bool = True,
               announce: Callable[[str], None] | None = None) -> SearchSummary:
    """Run (or resume) the search `config` asks for and write ``<out>/summary.json``; see the module docstring.
    `announce` gets one line saying where the study and the exports are, once the settings are checked.

    Raises:
        ConfigError, DataError: bad settings or data (nothing was stored).
        StudyError: the storage cannot be opened, or the study was made with other settings.
        SearchError: Ray cannot be started or reached.
        KeyboardInterrupt: Ctrl-C (or `SearchStopped`: SIGTERM), after storing the in-flight trials as
            interrupted and writing the summary.
    """
    started = time.monotonic()
    prepared = prepare(config)
    config, table, data, proxy_resolution, space = (prepared.config, prepared.table, prepared.data,
                                                    prepared.proxy_resolution, prepared.space)
    table_fit = check_table(table, config.remeasure, config.accept_stale_table, progress, announce)
    uses_ray = PROXIES[config.proxy].kind != "lookup"  # lookup proxies never leave this process
    if uses_ray and config.ray_address:
        check_ray_address(config.ray_address)  # before anything is created
    made = _missing_folders(Path(config.out))  # deepest first
    try:
        ensure_folder(config.out)
    except OSError as error:
        raise SearchError(f"cannot write the output folder --out {config.out}: {error.strerror or error}") from None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        study, resumed = open_study(config, _study_attrs(config, table, proxy_resolution, space))
    except BaseException:
        for folder in made:  # a refused study leaves no empty --out (nor the runs/ above it) behind
            if any(folder.iterdir()):
                break
            folder.rmdir()
        raise
    if table_fit is not None:  # for the model cards; rewritten on each run
        study.set_user_attr("latency_table_fit", table_fit.to_dict())
    rows = records(study)
    mirror = StudyMirror(study, make_sampler(config.sampler, sampler_seed(config.seed, len(rows)), config.objective,
                                             config.trials), make_pruner(config.pruner))
    requeued = mirror.requeue(rows)
    if requeued:
        _log.warning("queued again %d architecture(s) an earlier run was interrupted on", requeued)
    if announce is not None:
        done = sum(counts_towards_trials(row) for row in rows)
        state = f"resumed, {done} of {config.trials} trials done" if resumed else "new"
        announce(f"study {config.study!r} ({state}) in {config.storage}; summary and exports under {config.out}")
    deadline = started + config.timeout_s if config.timeout_s else None
    status = "finished"
    session = ray_session(config.ray_address, config.workers) if uses_ray else contextlib.nullcontext()
    with session, stop_on_sigterm() as stop:
        ray = __import__("ray") if uses_ray else None
        driver = None
        try:
            data_ref = ray.put(data) if ray is not None and data is not None else None
            driver = Driver(config, mirror, rows, table, evaluator, data_ref, proxy_resolution, space, ray)
            loop_started = time.perf_counter()
            status = driver.run(deadline, progress)
            mirror.flush()
        except KeyboardInterrupt:
            with deferred_stops():
                if driver is not None:
                    driver.abandon("interrupted: the search was stopped (Ctrl-C); requeued for the next run")
                mirror.flush()  # every finished trial is stored before the summary
                summary = summarise(study, config, "interrupted", time.monotonic() - started)
                write_json_atomic(config.out / "summary.json", summary.to_dict())
            if stop.signum is not None:
                raise SearchStopped(stop.signum) from None
            raise
        timing = {"loop_s": round(time.perf_counter() - loop_started, 4), "lookup_s": round(driver.lookup_s, 4),
                  "trials_run": driver.settled}
    with stop_on_sigterm():  # exports are written whole or not at all: a stop here loses none of the study
        exports = [str(path) for path in export_study(study, config.out, config.top_k, config.storage,
                                                      config.onnx)] if config.export else []
    summary = summarise(study, config, status, time.monotonic() - started, exports)
    summary.timing = timing
    write_json_atomic(config.out / "summary.json", summary.to_dict())
    return summary

