"""Optuna pruning of short-training evaluations that run on Ray workers.

The driver owns the study, the worker owns the training loop. A `ReportBoard` actor carries each intermediate
accuracy from the worker to the driver (`post`), and the driver's verdict back (`decide`): the worker waits for
it (`board_reporter`), the driver asks the study's pruner (`trial.report` + `trial.should_prune`) between
collecting results. A driver that never answers costs the worker `wait_s`, then training goes on.
"""
from __future__ import annotations

import time
from typing import Callable

import optuna

from nas.config import PRUNERS

__all__ = ["PRUNERS", "ReportBoard", "board_reporter", "make_pruner"]

MEDIAN_STARTUP_TRIALS = 5  # completed trials before the median pruner stops anything


def make_pruner(name: str) -> optuna.pruners.BasePruner:
    """``median``: stop a trial whose accuracy at a step is below the median of earlier trials at that step."""
    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=MEDIAN_STARTUP_TRIALS, n_warmup_steps=0)
    if name == "none":
        return optuna.pruners.NopPruner()
    raise ValueError(f"unknown pruner {name!r}; known pruners: {', '.join(PRUNERS)}")


class ReportBoard:
    """Intermediate values from the workers, verdicts from the driver; run as a Ray actor (``num_cpus=0``).
    Keys are the driver's trial numbers; steps are training steps."""

    def __init__(self) -> None:
        self.reports: list[tuple[int, int, float]] = []
        self.verdicts: dict[tuple[int, int], bool] = {}

    def post(self, key: int, step: int, value: float) -> None:
        self.reports.append((key, step, value))

    def take(self) -> list[tuple[int, int, float]]:
        """The reports posted since the last call, oldest first."""
        reports, self.reports = self.reports, []
        return reports

    def decide(self, key: int, step: int, prune: bool) -> None:
        self.verdicts[(key, step)] = prune

    def verdict(self, key: int, step: int) -> bool | None:
        """The driver's answer to the report of `key` at `step` (once), or None while it has not answered."""
        return self.verdicts.pop((key, step), None)


def board_reporter(board: object, key: int, wait_s: float = 120.0,
                   poll_s: float = 0.01) -> Callable[[int, float], bool]:
    """A ``report(step, value) -> stop?`` for `nas.proxies.short_train` that asks the driver through `board`."""
    import ray

    def report(step: int, value: float) -> bool:
        board.post.remote(key, step, value)
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            verdict = ray.get(board.verdict.remote(key, step))
            if verdict is not None:
                return verdict
            time.sleep(poll_s)
        return False
    return report
