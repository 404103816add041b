"""One trial as the search, its summary, the exports and the dashboard read it: `TrialRecord` (typed, from an
Optuna trial and the study's budget), the keys of its user attributes (`Attr`), and the one rule of feasibility
(`is_feasible`)."""
from __future__ import annotations

import math
from dataclasses import dataclass

import optuna
from optuna.trial import FrozenTrial, TrialState

from search_spaces import ArchSpec

__all__ = ["Attr", "FAIL_KINDS", "TrialRecord", "is_feasible", "record_of", "records", "best_record", "pareto_records",
           "distinct_feasible"]


class Attr:
    """The user-attribute keys of a trial (and ``BUDGET_MS`` of the study), written once."""
    ARCH = "arch"
    LATENCY_MS = "latency_ms"
    BUDGET_MS = "budget_ms"
    LATENCY_SOURCE = "latency_source"
    LATENCY_BREAKDOWN_MS = "latency_breakdown_ms"
    PARAMS = "params"
    FLOPS = "flops"
    PROXY_VALUE = "proxy_value"
    PROXY_SECONDS = "proxy_seconds"
    EVAL_SECONDS = "eval_seconds"
    WORKER = "worker"
    FAIL_REASON = "fail_reason"
    FAIL_KIND = "fail_kind"
    PRUNE_REASON = "prune_reason"
    PRUNED_AT_STEP = "pruned_at_step"
    DUPLICATE_OF = "duplicate_of"
    DIGEST = "digest"
    WORKER_LOST_BEFORE = "worker_lost_before"


# why a FAIL trial failed: its evaluation raised or scored non-finite, its worker was lost (twice), or a stop
# (Ctrl-C, SIGTERM) cut it short and the next run evaluates it again
FAIL_KINDS = ("evaluation", "worker_lost", "interrupted")


def is_feasible(proxy: float | None, latency_ms: float | None, budget_ms: float) -> bool:
    """Evaluated to a finite proxy, and within the budget."""
    return proxy is not None and math.isfinite(proxy) and latency_ms is not None and latency_ms <= budget_ms


@dataclass(frozen=True)
class TrialRecord:
    """What a search knows of one trial, read back from the storage."""
    number: int
    state: str  # "COMPLETE" | "PRUNED" | "FAIL" | "RUNNING" | "WAITING"
    spec: ArchSpec | None
    latency_ms: float | None
    proxy: float | None
    feasible: bool  # evaluated, and within the budget
    params: int | None
    flops: int | None
    latency_source: str | None
    breakdown_ms: dict
    reason: str | None  # why a trial failed or was pruned
    duplicate_of: int | None
    user_attrs: dict
    sampler_params: dict  # the Optuna parameters `sample_arch` read (``params`` is the parameter count)

    @property
    def stopped_by_pruner(self) -> bool:
        """PRUNED because the pruner stopped its training (the other PRUNED trials were over the budget)."""
        return self.state == "PRUNED" and Attr.PRUNED_AT_STEP in self.user_attrs


def record_of(trial: FrozenTrial, budget_ms: float) -> TrialRecord:
    """`trial` as a `TrialRecord` of a study with budget `budget_ms`."""
    attrs = trial.user_attrs
    spec = ArchSpec.from_json(attrs[Attr.ARCH]) if Attr.ARCH in attrs else None
    latency_ms = attrs.get(Attr.LATENCY_MS)
    proxy = trial.values[0] if trial.state == TrialState.COMPLETE and trial.values else None
    feasible = is_feasible(proxy, latency_ms, budget_ms)
    return TrialRecord(number=trial.number, state=trial.state.name, spec=spec, latency_ms=latency_ms, proxy=proxy,
                       feasible=feasible, params=attrs.get(Attr.PARAMS), flops=attrs.get(Attr.FLOPS),
                       latency_source=attrs.get(Attr.LATENCY_SOURCE),
                       breakdown_ms=attrs.get(Attr.LATENCY_BREAKDOWN_MS, {}),
                       reason=attrs.get(Attr.FAIL_REASON) or attrs.get(Attr.PRUNE_REASON),
                       duplicate_of=attrs.get(Attr.DUPLICATE_OF), user_attrs=dict(attrs),
                       sampler_params=dict(trial.params))


def records(study: optuna.Study) -> list[TrialRecord]:
    """Every trial of `study` as a `TrialRecord`, by trial number."""
    budget_ms = float(study.user_attrs.get(Attr.BUDGET_MS, math.inf))
    return [record_of(trial, budget_ms) for trial in study.get_trials(deepcopy=False)]


def distinct_feasible(rows: list[TrialRecord]) -> list[TrialRecord]:
    """The feasible trials that are not duplicates of an earlier one."""
    return [r for r in rows if r.feasible and r.duplicate_of is None]


def best_record(rows: list[TrialRecord]) -> TrialRecord | None:
    """The feasible trial with the highest proxy (the faster one on ties); None if none is feasible."""
    feasible = distinct_feasible(rows)
    return max(feasible, key=lambda r: (r.proxy, -r.latency_ms, -r.number)) if feasible else None


def pareto_records(rows: list[TrialRecord]) -> list[TrialRecord]:
    """Feasible trials no other feasible trial beats on both proxy (higher) and latency (lower), fastest first."""
    front: list[TrialRecord] = []
    for row in sorted(distinct_feasible(rows), key=lambda r: (r.latency_ms, -r.proxy, r.number)):
        if not front or row.proxy > front[-1].proxy:
            front.append(row)
    return front
