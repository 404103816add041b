"""A learned accuracy ranker: ridge regression from zero-cost features of a network to its trained accuracy.

No single zero-cost score ranks this space's networks much better than FLOPs; the same scores used as the features
of a small regression do (NAS-Bench-Suite-Zero, Krishnakumar et al., 2022). `Ranker` is that regression: the
features are standardised, the ridge strength is chosen by leave-one-out among the labelled networks it is fitted
on (never on the networks it is judged on), and its prediction is an accuracy-like score where higher is better.
It is fitted either once on trained labels and shipped (`SHIPPED_RANKER`, fitted on CIFAR-scale networks: see its
``fitted_on``), or by a search on the user's own data from brief trainings (few-shot).
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
from scipy.stats import spearmanr

from common.errors import UserFacingError

__all__ = ["Ranker", "RankerError", "fit_ranker", "load_ranker", "MIN_LABELS", "RIDGE_ALPHAS", "SHIPPED_RANKER"]

MIN_LABELS = 8  # fewer labelled networks than this cannot choose a ridge strength by leave-one-out
RIDGE_ALPHAS = (0.1, 0.3, 1.0, 3.0, 10.0, 30.0, 100.0, 300.0)
SHIPPED_RANKER = Path(__file__).with_name("rankers") / "cifar.json"


class RankerError(UserFacingError, ValueError):
    """A ranker that cannot be fitted, read or applied; the message is one line for the user."""


@dataclass(frozen=True)
class Ranker:
    """``score = intercept + sum_f weight_f * (x_f - mean_f) / std_f`` over the named features."""

    features: tuple[str, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    weights: tuple[float, ...]
    intercept: float
    alpha: float
    labels: int
    fitted_on: str  # what the labels were, in words: what a user is told the ranker rests on

    def predict(self, values: Mapping[str, float]) -> float:
        """The score of one network from its feature `values` (every name in `features`)."""
        missing = [name for name in self.features if name not in values]
        if missing:
            raise RankerError(f"ranker needs the features {', '.join(missing)}")
        z = [(values[f] - m) / s for f, m, s in zip(self.features, self.mean, self.std)]
        return self.intercept + float(np.dot(self.weights, z))

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping) -> Ranker:
        try:
            ranker = cls(features=tuple(data["features"]), mean=tuple(map(float, data["mean"])),
                         std=tuple(map(float, data["std"])), weights=tuple(map(float, data["weights"])),
                         intercept=float(data["intercept"]), alpha=float(data["alpha"]), labels=int(data["labels"]),
                         fitted_on=str(data["fitted_on"]))
        except (KeyError, TypeError, ValueError) as error:
            raise RankerError(f"not a ranker: {error!r}") from None
        sizes = {len(ranker.features), len(ranker.mean), len(ranker.std), len(ranker.weights)}
        if len(sizes) != 1 or not all(math.isfinite(v) for v in (*ranker.mean, *ranker.weights, ranker.intercept)) \
                or not all(s > 0 for s in ranker.std):
            raise RankerError("not a ranker: feature lists of different lengths, or non-finite values")
        return ranker


def _ridge(x: np.ndarray, y: np.ndarray, alpha: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """(mean, std, weights, intercept) of ridge regression of y ``[N]`` on standardised x ``[N, F]``."""
    mean, std = x.mean(axis=0), x.std(axis=0)
    std = np.where(std > 1e-12, std, 1.0)  # a constant feature gets weight 0 through the penalty
    z = (x - mean) / std
    weights = np.linalg.solve(z.T @ z + alpha * np.eye(x.shape[1]), z.T @ (y - y.mean()))
    return mean, std, weights, float(y.mean())


def _leave_one_out_spearman(x: np.ndarray, y: np.ndarray, alpha: float) -> float:
    predictions = np.empty(len(y))
    for i in range(len(y)):
        keep = np.arange(len(y)) != i
        mean, std, weights, intercept = _ridge(x[keep], y[keep], alpha)
        predictions[i] = intercept + ((x[i] - mean) / std) @ weights
    rho = spearmanr(predictions, y)[0]
    return float(rho) if math.isfinite(rho) else 0.0  # constant predictions rank nothing


def fit_ranker(rows: Sequence[Mapping[str, float]], labels: Sequence[float], features: Sequence[str],
               fitted_on: str, alphas: Sequence[float] = RIDGE_ALPHAS) -> Ranker:
    """A `Ranker` of `labels` (one accuracy per network) on the `features` of `rows` (one mapping per network),
    its ridge strength the one of `alphas` whose leave-one-out predictions rank `labels` best.

    Raises `RankerError` with fewer than `MIN_LABELS` networks, a missing feature, or non-finite values.
    """
    if len(rows) != len(labels):
        raise RankerError(f"{len(rows)} feature rows but {len(labels)} labels")
    if len(labels) < MIN_LABELS:
        raise RankerError(f"a ranker needs at least {MIN_LABELS} labelled networks to choose its ridge strength, "
                          f"got {len(labels)}")
    try:
        x = np.array([[float(row[name]) for name in features] for row in rows])
    except KeyError as error:
        raise RankerError(f"a labelled network has no feature {error.args[0]!r}") from None
    y = np.asarray(labels, dtype=float)
    if not (np.isfinite(x).all() and np.isfinite(y).all()):
        raise RankerError("ranker features and labels must be finite")
    alpha = max(alphas, key=lambda a: (_leave_one_out_spearman(x, y, a), a))  # ties: the stronger penalty
    mean, std, weights, intercept = _ridge(x, y, alpha)
    return Ranker(features=tuple(features), mean=tuple(mean.tolist()), std=tuple(std.tolist()),
                  weights=tuple(weights.tolist()), intercept=intercept, alpha=float(alpha), labels=len(y),
                  fitted_on=fitted_on)


def load_ranker(path: Path = SHIPPED_RANKER) -> Ranker:
    """The ranker stored as JSON at `path` (default: the shipped one)."""
    try:
        return Ranker.from_dict(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise RankerError(f"cannot read ranker {path}: {error}") from None
