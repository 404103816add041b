"""The ask/evaluate/tell loop of one search run over a study (`nas.search` prepares it and runs it)."""
from __future__ import annotations

import contextlib
import hashlib
import logging
import math
import os
import time
from typing import Callable

import optuna
from optuna.trial import TrialState
from tqdm import tqdm

from latency_tables import LatencyTable, Prediction
from latency_tables.block_costs import architecture_totals
from nas.config import SearchConfig
from nas.evaluate import EvalRequest, Outcome, ProxyData
from nas.proxies import PROXIES, lookup_score
from nas.pruning import ReportBoard, board_reporter
from nas.study import StudyMirror
from nas.summary import counts_towards_trials
from nas.trial_record import Attr, TrialRecord, best_record, record_of
from search_spaces import SearchSpace, sample_arch

__all__ = ["Driver", "Evaluator", "WORKER_LOST_RETRIES", "sampler_seed"]

_log = logging.getLogger(__name__)


# A worker lost mid-evaluation (killed, OOM-killer, node gone): its evaluation runs again from the start this
# many times; the trial keeps each loss in `worker_lost_before`, and fails as worker_lost after the last.
WORKER_LOST_RETRIES = 1
Evaluator = Callable[[EvalRequest, "ProxyData | None"], Outcome]


def _latency_attrs(prediction: Prediction, budget_ms: float) -> dict:
    return {Attr.LATENCY_MS: float(prediction.latency_ms), Attr.BUDGET_MS: float(budget_ms),
            Attr.LATENCY_SOURCE: prediction.source,
            Attr.LATENCY_BREAKDOWN_MS: {k: round(v, 6) for k, v in prediction.breakdown_ms().items()}}


def _set_attrs(trial: optuna.Trial, attrs: dict) -> None:
    for key, value in attrs.items():
        trial.set_user_attr(key, value)


def _outcome_attrs(outcome: Outcome) -> dict:
    attrs = {Attr.PROXY_VALUE: outcome.value, Attr.PROXY_SECONDS: round(outcome.proxy_seconds, 4),
             Attr.EVAL_SECONDS: round(outcome.seconds, 4), Attr.WORKER: outcome.worker}
    attrs.update({k: v for k, v in ((Attr.PARAMS, outcome.params), (Attr.FLOPS, outcome.flops)) if v is not None})
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




class Driver:
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
        self.counted = sum(counts_towards_trials(row) for row in rows)  # settled trials of every driver
        self.absorb(rows)

    def absorb(self, rows: list[TrialRecord]) -> None:
        """Stored trials (earlier runs', other drivers'): their architectures count as evaluated here too."""
        for row in rows:
            if row.spec is None or row.duplicate_of is not None:
                continue
            number = self.mirror.memory_number[row.number]
            if row.state == "COMPLETE" or row.stopped_by_pruner:
                self.done.setdefault(row.spec.digest(), (number, _outcome_from_attrs(row)))
            elif row.state == "FAIL" and row.user_attrs.get(Attr.FAIL_KIND) == "evaluation":
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
        self.counted += sum(counts_towards_trials(row) for row in foreign)
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
        attrs = _outcome_attrs(outcome) if outcome.ok else {Attr.FAIL_REASON: outcome.error, Attr.FAIL_KIND: fail_kind}
        if duplicate_of is not None:
            attrs[Attr.DUPLICATE_OF] = duplicate_of
        _set_attrs(trial, attrs)
        if not outcome.ok:
            return self.mirror.finish(trial, state=TrialState.FAIL)
        if outcome.details.get("stopped_early"):  # the pruner stopped its training
            step = outcome.details.get("steps")
            trial.set_user_attr(Attr.PRUNED_AT_STEP, step)
            trial.set_user_attr(Attr.PRUNE_REASON, f"pruned at step {step}: accuracy {outcome.value:.4f} below the "
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
        _set_attrs(trial, {Attr.ARCH: spec.to_json(), Attr.DIGEST: digest, Attr.PARAMS: params, Attr.FLOPS: flops,
                           **_latency_attrs(prediction, self.config.budget_ms)})
        trial.set_constraint("latency_over_budget_ms", latency_ms - self.config.budget_ms)
        if latency_ms > self.config.budget_ms:
            trial.set_user_attr(Attr.PRUNE_REASON, f"over budget: {latency_ms:.3f} ms > {self.config.budget_ms:g} ms")
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
                lost = trial.user_attrs.get(Attr.WORKER_LOST_BEFORE, [])
                if len(lost) < WORKER_LOST_RETRIES:  # run it again from the start, on a fresh worker
                    trial.set_user_attr(Attr.WORKER_LOST_BEFORE, [*lost, outcome.error])
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
            _set_attrs(trial, {Attr.FAIL_REASON: reason, Attr.FAIL_KIND: "interrupted"})
            self.mirror.finish(trial, state=TrialState.FAIL)
        self.in_flight.clear()
        self.requests.clear()
        self.waiting.clear()

    def _settled(self, settled: int, bar: tqdm) -> None:
        """Count `settled` trials of this driver, mirror the other drivers' new ones, and move the progress bar."""
        self.settled += settled
        self.counted += settled
        self.take_foreign()
        if settled:
            bar.update(settled)
            bar.set_postfix(self.tally.postfix(), refresh=False)

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
                    self._settled(self.propose(), bar)
                if not self.in_flight:
                    break
                timeout_s = None if deadline is None else max(0.1, deadline - time.monotonic())
                if self.pruning:  # wake up often enough to answer the workers' reports
                    self.serve_reports()
                    timeout_s = 0.05 if timeout_s is None else min(timeout_s, 0.05)
                self._settled(self.collect(timeout_s=timeout_s), bar)
        return status


def _outcome_from_attrs(row: TrialRecord) -> Outcome:
    attrs = row.user_attrs
    pruned_at = attrs.get(Attr.PRUNED_AT_STEP)
    return Outcome(ok=True, value=row.proxy if pruned_at is None else attrs.get(Attr.PROXY_VALUE),
                   proxy_seconds=attrs.get(Attr.PROXY_SECONDS, 0.0), params=attrs.get(Attr.PARAMS),
                   flops=attrs.get(Attr.FLOPS), seconds=attrs.get(Attr.EVAL_SECONDS, 0.0),
                   worker=attrs.get(Attr.WORKER, ""),
                   details={} if pruned_at is None else {"stopped_early": True, "steps": pruned_at})


def sampler_seed(seed: int, stored: int) -> int:
    """The sampler's seed: `seed` for a new study (a search is reproducible from it). A resumed study's sampler is
    seeded past its `stored` trials (so it proposes new architectures, not the first run's again) and apart from
    any other driver resuming it now (Optuna's distributed pattern: with one seed, two drivers started together
    propose the same architectures until they see each other's trials)."""
    if stored == 0:
        return seed
    return int.from_bytes(hashlib.sha256(f"{seed}:{stored}:{os.getpid()}".encode()).digest()[:4], "little")
