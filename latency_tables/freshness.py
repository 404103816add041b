"""Does a CPU latency table fit this machine now? A quick check before a search, a latency or a model card trusts it.

A CPU table is a property of one machine at one time: the same VM kind (an identical device string) ran the
shipped table's networks 1.5-2.2x slower on another day (issue 15). `check_fit` times a handful of stored entries
and one of the correction's networks again (a few seconds) and compares them with their stored times; beyond
`FIT_TOLERANCE` the table does not fit and its users stop, re-measure (`TableMeasurer.remeasure`, whose duration
`remeasure_seconds` estimates) or go on labelled stale. A table this machine measured within `FRESH_S` is
trusted without timing (the tests' and a user's just-measured tables).
"""
from __future__ import annotations

import datetime
from dataclasses import dataclass

from latency_tables.measurer import NETWORK_PASSES, Drift, TableMeasurer
from latency_tables.table import LatencyTable

__all__ = ["FIT_TOLERANCE", "FRESH_S", "TableFit", "check_fit", "remeasure_seconds", "about"]

# Beyond 1.25x (or below 1/1.25x) the table is stale. On this 2-core VM, back-to-back checks of one table vary
# by ~10% (benchmarks/timing_noise.py: a shared CPU drifts 1.2x within an hour), so a tighter bound would refuse
# tables that fit; the stale tables seen ran 1.45-1.9x.
FIT_TOLERANCE = 0.25
FRESH_S = 3600.0  # a table with an entry measured here this recently is trusted without timing
CHECK_ENTRIES = 6  # stored entries timed again per check
CHECK_NETWORKS = 1  # correction networks timed again per check


@dataclass(frozen=True)
class TableFit:
    """The verdict on one table: ``fits``, and ``summary``, one line saying what was timed and how far off."""
    fits: bool
    summary: str
    entries: Drift | None = None
    networks: Drift | None = None

    def to_dict(self) -> dict:
        ratio = lambda drift: None if drift is None else round(drift.ratio, 4)  # noqa: E731
        return {"fits": self.fits, "summary": self.summary, "entries_ratio": ratio(self.entries),
                "networks_ratio": ratio(self.networks)}


def _within(ratio: float) -> bool:
    return 1 / (1 + FIT_TOLERANCE) <= ratio <= 1 + FIT_TOLERANCE


def check_fit(table: LatencyTable, now: datetime.datetime | None = None) -> TableFit | None:
    """Whether `table` (a CPU target's, on this machine) fits this machine now; None where there is nothing to
    check (a GPU target's table, which this machine cannot time, or a table without entries).
    `TargetUnavailableError` if this machine cannot run the target."""
    if table.target.kind != "cpu" or not table.entries():
        return None
    measurer = TableMeasurer(table)
    now = now or datetime.datetime.now(datetime.timezone.utc)
    newest = max(table.entries().values(), key=lambda m: m.measured_at)
    age_s = (now - newest.measured_at).total_seconds()
    if age_s < FRESH_S and table.db.claimed_device(table.target.name) == measurer.device_string:
        return TableFit(True, f"{table.target.name} table measured on this machine {age_s / 60:.0f} min ago")
    entries = measurer.drift(CHECK_ENTRIES)
    networks = measurer.network_drift(CHECK_NETWORKS)
    decisive = networks or entries  # a prediction is fitted to networks: their drift is what a budget sees
    timed = f"{entries.timed} stored entries run {entries.ratio:.2f}x their stored times" + (
        f", {networks.timed} correction network {networks.ratio:.2f}x" if networks else "")
    if _within(decisive.ratio):
        return TableFit(True, f"{table.target.name} table fits this machine: {timed}", entries, networks)
    return TableFit(False, f"the {table.target.name} table does not fit this machine now: {timed} (beyond "
                           f"±{FIT_TOLERANCE:.0%})", entries, networks)


def remeasure_seconds(table: LatencyTable) -> float:
    """About how long `TableMeasurer.remeasure` takes here: each entry and correction network timed as the
    measurer does (warm-up, then repeats until ``min_time_s``), at the table's stored speed."""
    s = table.settings

    def timing_s(ms: float) -> float:
        return (s.warmup + min(s.max_repeats, max(s.min_repeats, s.min_time_s * 1000 / ms))) * ms / 1000

    blocks = sum(timing_s(m.median_ms) for m in table.entries().values()) * s.passes
    networks = sum(timing_s(ms) for _, ms in table.correction_networks()) * NETWORK_PASSES
    return blocks + networks


def about(seconds: float) -> str:
    """A duration to announce: ``about 40 s``, ``about 15 min``, ``about 2.5 h``."""
    if seconds < 90:
        return f"about {max(1, round(seconds))} s"
    return f"about {seconds / 60:.0f} min" if seconds < 5400 else f"about {seconds / 3600:.1f} h"
