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
"""
from __future__ import annotations

import contextlib
import hashlib
import logging
import math
import os
import shlex
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import optuna
from optuna.trial import TrialState
from tqdm import tqdm

from common.errors import UserFacingError
from common.files import ensure_folder, write_json_atomic
from latency_tables import (EstimationError, LatencyDBError, LatencyTable, Prediction, TargetUnavailableError,
                            UnknownTargetError, open_table)
from latency_tables.block_costs import architecture_totals
from latency_tables.freshness import TableFit, about, check_fit, remeasure_seconds
from nas.config import ConfigError, SearchConfig
from nas.data import load_data
from nas.evaluate import EvalRequest, Outcome, ProxyData, evaluate
from nas.proxies import DATA_FREE, PROXIES, lookup_score
from nas.pruning import ReportBoard, board_reporter, make_pruner
from nas.export import export_study
from nas.study import (
    StudyMirror, TrialRecord, best_record, make_sampler, open_study, pareto_records, record_of, records,
)
from search_spaces import SearchSpace, SpaceError, load_space, sample_arch

__all__ = ["SearchError", "SearchStopped", "SearchSummary", "run_search", "stop_on_sigterm", "deferred_stops",
           "prepare", "summarise", "ray_session", "Prepared"]

_log = logging.getLogger(__name__)

PROJECT_ROOT = Path(__file__).resolve().parents[1]
# A worker lost mid-evaluation (killed, OOM-killer, node gone): its evaluation runs again from the start this
# many times; the trial keeps each loss in `worker_lost_before`, and fails as worker_lost after the last.
WORKER_LOST_RETRIES = 1
Evaluator = Callable[[EvalRequest, "ProxyData | None"], Outcome]


class SearchError(UserFacingError, RuntimeError):
    """The search cannot start or go on (Ray unreachable, latency table unusable...); one line says why."""


class SearchStopped(KeyboardInterrupt):
    """A signal other than Ctrl-C asked the search to stop (`signum`, e.g. SIGTERM); handled as Ctrl-C is."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


@dataclass
class StopSignal:
    """The signal `stop_on_sigterm` received, if any (None: none, or Ctrl-C)."""
    signum: int | None = None


def _set_handler(signum: int, handler) -> object:
    """`signal.signal`, returning the previous handler as one that can be set again (SIG_DFL for a C handler)."""
    previous = signal.signal(signum, handler)
    return signal.SIG_DFL if previous is None else previous


@contextlib.contextmanager
def stop_on_sigterm() -> Iterator[StopSignal]:
    """Inside, SIGTERM interrupts the main thread as Ctrl-C does, so `kill <pid>` stops a search cleanly (in-flight
    trials stored as interrupted, summary written); the signal is recorded in the yielded `StopSignal` (Ray's
    blocking calls turn the handler's exception into a plain KeyboardInterrupt). Only the first SIGTERM raises;
    later ones are recorded, so a repeated `kill` does not break off the cleanup. Replaces Ray's handler, which
    exits at once; the previous one is restored on leaving. Outside the main thread it only yields.
    """
    received = StopSignal()
    if threading.current_thread() is not threading.main_thread():
        yield received
        return

    def stop(signum: int, frame: object) -> None:
        first = received.signum is None
        received.signum = signum
        if first:
            raise SearchStopped(signum)

    previous = _set_handler(signal.SIGTERM, stop)
    try:
        yield received
    finally:
        _set_handler(signal.SIGTERM, previous)


@contextlib.contextmanager
def deferred_stops() -> Iterator[None]:
    """Inside, Ctrl-C and SIGTERM are ignored: the cleanup after a stop (storing the in-flight trials, writing the
    summary) runs to its end. Outside the main thread it only yields."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {signum: _set_handler(signum, signal.SIG_IGN) for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            _set_handler(signum, handler)


@dataclass
class SearchSummary:
    """What `run_search` did; written as ``<out>/summary.json``."""
    study: str
    storage: str
    target: str
    budget_ms: float
    objective: str
    sampler: str
    proxy: str
    latency_source: str
    status: str  # "finished" | "interrupted" | "timeout"
    trials: dict
    best: dict | None
    pareto: list[dict]
    exports: list[str] = field(default_factory=list)
    out: str = ""
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)
    timing: dict = field(default_factory=dict)  # this run's loop_s, latency lookup_s and trials settled

    def to_dict(self) -> dict:
        return dict(self.__dict__)

    def trials_line(self) -> str:
        """``trials: N — ...``: every trial counted once, the parts summing to N (pruned and interrupted ones shown
        where there are any)."""
        counts = self.trials
        parts = [(counts["feasible"], "feasible evaluated"), (counts["over_budget"], "over budget (not evaluated)"),
                 (counts["duplicates"], "duplicates"), (counts["failed"], "failed")]
        parts += [(n, label) for n, label in ((counts.get("pruned", 0), "stopped by the pruner"),
                                              (counts.get("interrupted", 0), "interrupted (run again on resume)"))
                  if n]
        rest = counts["total"] - sum(n for n, _ in parts)
        if rest:
            parts.append((rest, "evaluated over the budget or still running"))
        return f"trials: {counts['total']} — " + ", ".join(f"{n} {label}" for n, label in parts)


# ----------------------------------------------------------------------------------------------------- Ray
@contextlib.contextmanager
def ray_session(address: str | None, workers: int) -> Iterator[None]:
    """Ray for one search: a local instance with `workers` CPUs (its session folder in a temporary folder of its
    own, removed after), or the cluster at `address`; shut down after (unless Ray was already initialised by the
    caller)."""
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # Ray 2.60 writes an auth token to ~ otherwise
    import ray

    if ray.is_initialized():
        yield
        return
    options = dict(logging_level=logging.WARNING, log_to_driver=False, configure_logging=True)
    session_folder = None if address else tempfile.mkdtemp(prefix="ray-hnas-")  # not /tmp/ray, kept forever
    try:
        if address:
            ray.init(address=address, **options)
        else:  # workers import this project from its folder even where it is not pip-installed
            path = os.pathsep.join(p for p in (str(PROJECT_ROOT), os.environ.get("PYTHONPATH", "")) if p)
            # address="local": a new instance even where `ray start` left a cluster address behind
            ray.init(address="local", num_cpus=workers, include_dashboard=False, _temp_dir=session_folder,
                     runtime_env={"env_vars": {"PYTHONPATH": path}}, **options)
    except Exception as error:  # Ray raises ConnectionError, RuntimeError, ValueError... for a bad address
        _remove_session_folder(session_folder)
        where = f"the Ray cluster at {address}" if address else "a local Ray instance"
        raise SearchError(f"cannot start or reach {where}: {str(error).splitlines()[0]}") from None
    try:
        yield
    finally:
        ray.shutdown()
        _remove_session_folder(session_folder)


def _remove_session_folder(folder: str | None) -> None:
    if folder is not None:
        shutil.rmtree(folder, ignore_errors=True)


def check_ray_address(address: str, wait_s: float = 10.0) -> None:
    """`SearchError` unless something listens at the Ray address ``host:port`` (or ``ray://host:port``) within
    `wait_s` (a head still starting gets that long); Ray's own ``init`` retries a dead address for minutes.
    ``auto`` (a cluster this machine started) is left to Ray."""
    target = address.removeprefix("ray://")
    if target == "auto" or ":" not in target:
        return
    host, _, port = target.rpartition(":")
    deadline = time.monotonic() + wait_s
    while True:
        try:
            with socket.create_connection((host.strip("[]"), int(port)), timeout=max(0.5, wait_s / 4)):
                return
        except (OSError, ValueError) as error:
            if isinstance(error, OSError) and time.monotonic() < deadline:
                time.sleep(0.25)
                continue
            reason = getattr(error, "strerror", None) or str(error) or type(error).__name__
            raise SearchError(f"no Ray cluster answers at {address} ({reason}); start one there (ray start --head "
                              f"--port {port}) or leave out --ray-address for a local Ray") from None


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
            table.remeasure(progress)
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


def _latency_attrs(prediction: Prediction, budget_ms: float) -> dict:
    return {"latency_ms": float(prediction.latency_ms), "budget_ms": float(budget_ms),
            "latency_source": prediction.source,
            "latency_breakdown_ms": {k: round(v, 6) for k, v in prediction.breakdown_ms().items()}}


def _set_attrs(trial: optuna.Trial, attrs: dict) -> None:
    for key, value in attrs.items():
        trial.set_user_attr(key, value)


def _outcome_attrs(outcome: Outcome) -> dict:
    attrs = {"proxy_value": outcome.value, "proxy_seconds": round(outcome.proxy_seconds, 4),
             "eval_seconds": round(outcome.seconds, 4), "worker": outcome.worker}
    attrs.update({k: v for k, v in (("params", outcome.params), ("flops", outcome.flops)) if v is not None})
    return attrs


class _Tally:
    """Counts for the progress bar."""

    def __init__(self, rows: list[TrialRecord]) -> None:
        best = best_record(rows)
        self.feasible = sum(r.feasible and r.duplicate_of is None for r in rows)
        self.best = best.proxy if best else None

    def add(self, value: float) -> None:
        self.feasible += 1
        self.best = value if self.best is None else max(self.best, value)

    def postfix(self) -> dict:
        return {"feasible": self.feasible, "best": "-" if self.best is None else f"{self.best:.4g}"}


def _task(evaluator: Evaluator) -> Callable[[EvalRequest, ProxyData | None, object | None, int], Outcome]:
    """The Ray task around `evaluator` (shipped to the workers once, with the task's definition): it reports
    intermediate values through `board` when one is given."""
    def run_evaluation(request: EvalRequest, data: ProxyData | None, board: object | None, key: int) -> Outcome:
        if board is None:
            return evaluator(request, data)
        return evaluator(request, data, report=board_reporter(board, key))
    return run_evaluation


def _missing_folders(path: Path) -> list[Path]:
    """`path` and those of its parents that do not exist yet, deepest first."""
    missing = []
    while not path.exists() and path != path.parent:
        missing.append(path)
        path = path.parent
    return missing


# -------------------------------------------------------------------------------------------------- driver
class _Driver:
    """One run of the ask/evaluate/tell loop over a study (see the module docstring)."""

    def __init__(self, config: SearchConfig, mirror: StudyMirror, rows: list[TrialRecord], table: LatencyTable,
                 evaluator: Evaluator, data_ref: object, proxy_resolution: int, space: SearchSpace,
                 ray: object | None) -> None:
        self.ray = ray  # None for a lookup proxy: every trial settles in this process
        self.config, self.mirror, self.table, self.space = config, mirror, table, space
        self.lookup = PROXIES[config.proxy].kind == "lookup"
        if ray is not None:
            # no retry by Ray: the driver runs a lost worker's evaluation again itself, and says so in the trial
            self.remote = ray.remote(num_cpus=1, max_retries=0, retry_exceptions=False)(_task(evaluator))
        self.data_ref = data_ref
        # Optuna pruning needs intermediate values (short_train) and one objective (Optuna cannot prune several)
        self.pruning = (ray is not None and config.pruner != "none" and PROXIES[config.proxy].kind == "training"
                        and config.objective == "best")
        self.board = ray.remote(num_cpus=0)(ReportBoard).remote() if self.pruning else None
        if self.board is not None:  # wait for the actor once here, not inside the first `serve_reports`
            ray.get(self.board.take.remote())
        self.proxy_resolution = proxy_resolution
        self.in_flight: dict[object, tuple[optuna.Trial, str, float]] = {}  # ref -> (trial, digest, latency_ms)
        self.requests: dict[object, EvalRequest] = {}  # ref -> what it evaluates (to run it again)
        self.waiting: dict[str, list[tuple[optuna.Trial, float]]] = {}  # digest -> duplicates of an in-flight one
        self.done: dict[str, tuple[int, Outcome]] = {}  # digest -> (in-memory trial number, outcome) of evaluated
        self.tally = _Tally(rows)
        self.lookup_s = 0.0  # time spent looking latencies, params and FLOPs up
        self.settled = 0
        self.counted = sum(_counts_towards_trials(row) for row in rows)  # settled trials of every driver
        self.absorb(rows)

    def absorb(self, rows: list[TrialRecord]) -> None:
        """Stored trials (earlier runs', other drivers'): their architectures count as evaluated here too."""
        for row in rows:
            if row.spec is None or row.duplicate_of is not None:
                continue
            number = self.mirror.memory_number[row.number]
            if row.state == "COMPLETE" or row.stopped_by_pruner:
                self.done.setdefault(row.spec.digest(), (number, _outcome_from_attrs(row)))
            elif row.state == "FAIL" and row.user_attrs.get("fail_kind") == "evaluation":
                self.done.setdefault(row.spec.digest(), (number, Outcome(ok=False, error=row.reason)))

    def take_foreign(self) -> None:
        """Fold in the trials other drivers stored since the last flush (and count them towards ``--trials``).

        Once another driver is seen, trials are written as they finish wherever a trial costs more than its commit
        (Ray evaluations; lookups near the end of the budget): the drivers then see each other's trials at once,
        so they split ``--trials`` (overshooting by at most the trials in flight, as Optuna's own distributed
        pattern does) and evaluate an architecture twice only when both had it in flight together."""
        foreign = [record_of(trial, self.config.budget_ms) for trial in self.mirror.take_foreign()]
        if foreign and (not self.lookup or self.remaining() <= self.mirror.flush_every):
            self.mirror.flush_every = 1
        self.counted += sum(_counts_towards_trials(row) for row in foreign)
        self.absorb(foreign)

    def remaining(self) -> int:
        """Trials still to ask for the study to reach ``--trials``, counting every driver's settled ones."""
        waiting = sum(len(twins) for twins in self.waiting.values())
        return self.config.trials - self.counted - len(self.in_flight) - waiting

    def values(self, outcome: Outcome, latency_ms: float) -> list[float]:
        return [outcome.value, latency_ms] if self.config.objective == "pareto" else [outcome.value]

    def tell(self, trial: optuna.Trial, outcome: Outcome, latency_ms: float, duplicate_of: int | None = None,
             fail_kind: str = "evaluation") -> int:
        """Record `outcome` on `trial` and queue it for the storage; returns its in-memory number."""
        attrs = _outcome_attrs(outcome) if outcome.ok else {"fail_reason": outcome.error, "fail_kind": fail_kind}
        if duplicate_of is not None:
            attrs["duplicate_of"] = duplicate_of
        _set_attrs(trial, attrs)
        if not outcome.ok:
            return self.mirror.finish(trial, state=TrialState.FAIL)
        if outcome.details.get("stopped_early"):  # the pruner stopped its training
            step = outcome.details.get("steps")
            trial.set_user_attr("pruned_at_step", step)
            trial.set_user_attr("prune_reason", f"pruned at step {step}: accuracy {outcome.value:.4f} below the "
                                                f"median of earlier trials")
            return self.mirror.finish(trial, state=TrialState.PRUNED)
        if duplicate_of is None:
            self.tally.add(outcome.value)
        return self.mirror.finish(trial, self.values(outcome, latency_ms))

    def propose(self) -> int:
        """Ask one trial and either settle it at once (over budget, a duplicate, a lookup proxy) or dispatch it;
        returns trials settled."""
        trial = self.mirror.ask()
        spec = sample_arch(trial, self.space)
        digest = spec.digest()
        lookup_started = time.perf_counter()
        prediction = self.table.predict(spec)
        params, flops = architecture_totals(spec, self.table.settings.resolution)
        value = lookup_score(self.config.proxy, spec, self.proxy_resolution) if self.lookup else None
        self.lookup_s += time.perf_counter() - lookup_started
        latency_ms = prediction.latency_ms
        _set_attrs(trial, {"arch": spec.to_json(), "digest": digest, "params": params, "flops": flops,
                           **_latency_attrs(prediction, self.config.budget_ms)})
        trial.set_constraint("latency_over_budget_ms", latency_ms - self.config.budget_ms)
        if latency_ms > self.config.budget_ms:
            trial.set_user_attr("prune_reason", f"over budget: {latency_ms:.3f} ms > {self.config.budget_ms:g} ms")
            self.mirror.finish(trial, state=TrialState.PRUNED)
            return 1
        if digest in self.done:
            number, outcome = self.done[digest]
            self.tell(trial, outcome, latency_ms, duplicate_of=number)
            return 1
        if self.lookup:
            outcome = Outcome(ok=True, value=value, seconds=time.perf_counter() - lookup_started, worker="driver")
            self.done[digest] = (self.tell(trial, outcome, latency_ms), outcome)
            return 1
        if any(d == digest for _, d, _ in self.in_flight.values()):
            self.waiting.setdefault(digest, []).append((trial, latency_ms))
            return 0
        request = EvalRequest(spec_json=spec.to_json(), proxy=self.config.proxy,
                              proxy_resolution=self.proxy_resolution, seed=self.config.seed,
                              train_steps=self.config.train_steps)
        self.dispatch(trial, digest, latency_ms, request)
        return 0

    def dispatch(self, trial: optuna.Trial, digest: str, latency_ms: float, request: EvalRequest) -> None:
        ref = self.remote.remote(request, self.data_ref, self.board, trial.number)
        self.in_flight[ref] = (trial, digest, latency_ms)
        self.requests[ref] = request

    def serve_reports(self) -> None:
        """Answer the workers' intermediate values: report each to its trial and send the pruner's verdict."""
        running = {trial.number: trial for trial, _, _ in self.in_flight.values()}
        for key, step, value in self.ray.get(self.board.take.remote()):
            trial = running.get(key)
            prune = False
            if trial is not None:
                trial.report(value, step)
                prune = trial.should_prune()
            self.board.decide.remote(key, step, prune)

    def collect(self, timeout_s: float | None = None) -> int:
        """Tell the evaluations that finished (waiting up to `timeout_s` for one); returns trials settled."""
        ready, _ = self.ray.wait(list(self.in_flight), num_returns=1, timeout=timeout_s)
        settled = 0
        for ref in ready:
            trial, digest, latency_ms = self.in_flight.pop(ref)
            request = self.requests.pop(ref)
            fail_kind = "evaluation"
            try:
                outcome = self.ray.get(ref)
            except self.ray.exceptions.RayError as error:  # worker died (killed, OOM-killer), node lost
                outcome = Outcome(ok=False, error=f"worker lost: {type(error).__name__}: "
                                                  f"{str(error).strip().splitlines()[0] if str(error) else ''}")
                fail_kind = "worker_lost"
                lost = trial.user_attrs.get("worker_lost_before", [])
                if len(lost) < WORKER_LOST_RETRIES:  # run it again from the start, on a fresh worker
                    trial.set_user_attr("worker_lost_before", [*lost, outcome.error])
                    self.dispatch(trial, digest, latency_ms, request)
                    continue
            if outcome.ok and not math.isfinite(outcome.value):
                outcome = Outcome(ok=False, error=f"proxy gave {outcome.value}")
            number = self.tell(trial, outcome, latency_ms, fail_kind=fail_kind)
            settled += 1
            if fail_kind == "evaluation":
                self.done[digest] = (number, outcome)
            for twin, twin_latency in self.waiting.pop(digest, []):
                self.tell(twin, outcome, twin_latency, duplicate_of=number, fail_kind=fail_kind)
                settled += 1
        return settled

    def abandon(self, reason: str) -> None:
        """Store every unfinished trial as FAIL with `reason` (interrupt); the next run queues them again."""
        pending = [trial for trial, _, _ in self.in_flight.values()]
        pending += [trial for twins in self.waiting.values() for trial, _ in twins]
        for ref in list(self.in_flight):
            with contextlib.suppress(Exception):
                self.ray.cancel(ref, force=True)
        for trial in pending:
            _set_attrs(trial, {"fail_reason": reason, "fail_kind": "interrupted"})
            self.mirror.finish(trial, state=TrialState.FAIL)
        self.in_flight.clear()
        self.requests.clear()
        self.waiting.clear()

    def run(self, deadline: float | None, progress: bool) -> str:
        """Run until the study has ``--trials`` settled trials (other drivers' included) or the deadline passes;
        returns the stop reason."""
        status = "finished"
        with tqdm(total=max(0, self.remaining()), disable=not progress, unit="trial", dynamic_ncols=True,
                  desc=f"search {self.config.study}", mininterval=0.5) as bar:
            bar.set_postfix(self.tally.postfix())
            while True:
                while self.remaining() > 0 and len(self.in_flight) < self.config.workers:
                    if deadline is not None and time.monotonic() > deadline:  # checked per trial: lookups never wait
                        status = "timeout"
                        break
                    settled = self.propose()
                    self.settled += settled
                    self.counted += settled
                    self.take_foreign()
                    if settled:
                        bar.update(settled)
                        bar.set_postfix(self.tally.postfix(), refresh=False)
                if not self.in_flight:
                    break
                timeout_s = None if deadline is None else max(0.1, deadline - time.monotonic())
                if self.pruning:  # wake up often enough to answer the workers' reports
                    self.serve_reports()
                    timeout_s = 0.05 if timeout_s is None else min(timeout_s, 0.05)
                settled = self.collect(timeout_s=timeout_s)
                self.settled += settled
                self.counted += settled
                self.take_foreign()
                if settled:
                    bar.update(settled)
                    bar.set_postfix(self.tally.postfix(), refresh=False)
        return status


def _outcome_from_attrs(row: TrialRecord) -> Outcome:
    attrs = row.user_attrs
    pruned_at = attrs.get("pruned_at_step")
    return Outcome(ok=True, value=row.proxy if pruned_at is None else attrs.get("proxy_value"),
                   proxy_seconds=attrs.get("proxy_seconds", 0.0), params=attrs.get("params"), flops=attrs.get("flops"),
                   seconds=attrs.get("eval_seconds", 0.0), worker=attrs.get("worker", ""),
                   details={} if pruned_at is None else {"stopped_early": True, "steps": pruned_at})


def _sampler_seed(seed: int, stored: int) -> int:
    """The sampler's seed: `seed` for a new study (a search is reproducible from it). A resumed study's sampler is
    seeded past its `stored` trials (so it proposes new architectures, not the first run's again) and apart from
    any other driver resuming it now (Optuna's distributed pattern: with one seed, two drivers started together
    propose the same architectures until they see each other's trials)."""
    if stored == 0:
        return seed
    return int.from_bytes(hashlib.sha256(f"{seed}:{stored}:{os.getpid()}".encode()).digest()[:4], "little")


def _counts_towards_trials(row: TrialRecord) -> bool:
    """Settled trials count towards ``--trials``, except those an interrupt cut short (requeued)."""
    return row.state in ("COMPLETE", "PRUNED", "FAIL") and row.user_attrs.get("fail_kind") != "interrupted"


def _row_summary(row: TrialRecord) -> dict:
    return {"trial": row.number, "latency_ms": row.latency_ms, "proxy": row.proxy, "params": row.params,
            "flops": row.flops, "latency_source": row.latency_source, "breakdown_ms": row.breakdown_ms,
            "arch": row.spec.to_dict() if row.spec else None}


def summarise(study: optuna.Study, config: SearchConfig, status: str, seconds: float,
              exports: list[str] | None = None) -> SearchSummary:
    """The `SearchSummary` of a stored study (also used by ``launch.py export``)."""
    rows = records(study)
    best = best_record(rows)
    front = pareto_records(rows)
    counts = {"total": len(rows),
              "complete": sum(r.state == "COMPLETE" for r in rows),
              "feasible": sum(r.feasible and r.duplicate_of is None for r in rows),
              "duplicates": sum(r.duplicate_of is not None for r in rows),
              "over_budget": sum(r.state == "PRUNED" and not r.stopped_by_pruner for r in rows),
              "pruned": sum(r.stopped_by_pruner for r in rows),
              "failed": sum(r.state == "FAIL" and r.user_attrs.get("fail_kind") != "interrupted" for r in rows),
              "interrupted": sum(r.user_attrs.get("fail_kind") == "interrupted" for r in rows)}
    sources = {r.latency_source.split(";")[0].split(" (")[0] for r in rows if r.latency_source}
    source = best.latency_source if best else ("; ".join(sorted(sources)) or "none")
    notes = []
    if best is None:
        fastest = min((r.latency_ms for r in rows if r.latency_ms is not None), default=None)
        notes.append("no architecture within the budget" + (f"; the fastest seen takes {fastest:.3f} ms" if fastest
                                                              is not None else ""))
    table_fit = study.user_attrs.get("latency_table_fit")
    if table_fit is not None and not table_fit["fits"]:
        notes.append(table_fit["summary"])
    if study.user_attrs.get("data") is None:
        notes.append(f"no --data: scored with the data-free proxy {config.proxy!r}")
    return SearchSummary(study=config.study, storage=config.storage, target=config.target,
                         budget_ms=float(config.budget_ms), objective=config.objective, sampler=config.sampler,
                         proxy=config.proxy, latency_source=source, status=status, trials=counts,
                         best=_row_summary(best) if best else None, pareto=[_row_summary(r) for r in front],
                         exports=list(exports or []), out=str(config.out), seconds=round(seconds, 2), notes=notes)


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
    mirror = StudyMirror(study, make_sampler(config.sampler, _sampler_seed(config.seed, len(rows)), config.objective,
                                             config.trials), make_pruner(config.pruner))
    requeued = mirror.requeue(rows)
    if requeued:
        _log.warning("queued again %d architecture(s) an earlier run was interrupted on", requeued)
    if announce is not None:
        done = sum(_counts_towards_trials(row) for row in rows)
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
            driver = _Driver(config, mirror, rows, table, evaluator, data_ref, proxy_resolution, space, ray)
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

