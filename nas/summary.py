"""What a search did, as `SearchSummary` (``<out>/summary.json``) and its one-line trial count."""
from __future__ import annotations

from dataclasses import dataclass, field

import optuna

from nas.config import SearchConfig
from nas.trial_record import Attr, TrialRecord, best_record, pareto_records, records

__all__ = ["SearchSummary", "summarise", "counts_towards_trials"]


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


def counts_towards_trials(row: TrialRecord) -> bool:
    """Settled trials count towards ``--trials``, except those an interrupt cut short (requeued)."""
    return row.state in ("COMPLETE", "PRUNED", "FAIL") and row.user_attrs.get(Attr.FAIL_KIND) != "interrupted"


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
              "failed": sum(r.state == "FAIL" and r.user_attrs.get(Attr.FAIL_KIND) != "interrupted" for r in rows),
              "interrupted": sum(r.user_attrs.get(Attr.FAIL_KIND) == "interrupted" for r in rows)}
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
