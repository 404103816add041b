"""The learned ranker: its fit recovers a planted linear rule, survives a JSON round trip, refuses too few labels."""
from __future__ import annotations

import json

import numpy as np
import pytest
from scipy.stats import spearmanr

from nas.proxies import RANKER_FEATURES
from nas.ranker import MIN_LABELS, SHIPPED_RANKER, Ranker, RankerError, fit_ranker, load_ranker

FEATURES = ("a", "b", "noise")


def _rows(n: int, seed: int) -> tuple[list[dict], list[float]]:
    """`n` networks whose label is 0.6 + 0.03 a - 0.01 b (+ a little noise), with a useless third feature."""
    rng = np.random.default_rng(seed)
    rows = [{"a": float(rng.normal(3, 2)), "b": float(rng.normal(-1, 0.5)), "noise": float(rng.normal())}
            for _ in range(n)]
    labels = [0.6 + 0.03 * r["a"] - 0.01 * r["b"] + float(rng.normal(0, 0.002)) for r in rows]
    return rows, labels


def test_fit_then_predict_ranks_unseen_networks_by_the_planted_rule() -> None:
    rows, labels = _rows(23, seed=1)
    ranker = fit_ranker(rows, labels, FEATURES, "planted")
    unseen, truth = _rows(17, seed=2)
    predicted = [ranker.predict(r) for r in unseen]
    assert spearmanr(predicted, truth)[0] > 0.95
    assert np.mean(np.abs(np.array(predicted) - truth)) < 0.01  # an accuracy-like score, not just an order
    weights = dict(zip(ranker.features, ranker.weights))
    assert weights["a"] > 0 > weights["b"] and abs(weights["noise"]) < 0.1 * weights["a"]
    assert ranker.labels == 23 and ranker.fitted_on == "planted" and ranker.alpha in (0.1, 0.3, 1.0, 3.0)


def test_a_ranker_survives_a_json_round_trip() -> None:
    rows, labels = _rows(11, seed=3)
    ranker = fit_ranker(rows, labels, FEATURES, "round trip")
    again = Ranker.from_dict(json.loads(json.dumps(ranker.to_dict())))
    assert again == ranker
    assert again.predict(rows[4]) == pytest.approx(ranker.predict(rows[4]), abs=0)


def test_too_few_labels_are_refused() -> None:
    rows, labels = _rows(MIN_LABELS - 1, seed=4)
    with pytest.raises(RankerError, match=f"at least {MIN_LABELS} labelled networks.*got {MIN_LABELS - 1}"):
        fit_ranker(rows, labels, FEATURES, "too few")
    with pytest.raises(RankerError, match="no feature 'c'"):
        fit_ranker(*_rows(9, seed=5), (*FEATURES, "c"), "missing")
    rows, labels = _rows(9, seed=6)
    labels[2] = float("nan")
    with pytest.raises(RankerError, match="finite"):
        fit_ranker(rows, labels, FEATURES, "nan")


def test_predicting_without_a_feature_is_refused() -> None:
    ranker = fit_ranker(*_rows(9, seed=7), FEATURES, "x")
    with pytest.raises(RankerError, match="needs the features b"):
        ranker.predict({"a": 1.0, "noise": 0.0})


def test_damaged_ranker_files_are_one_line(tmp_path) -> None:
    path = tmp_path / "ranker.json"
    path.write_text('{"features": ["a"], "mean": [0.0]}')
    with pytest.raises(RankerError, match="not a ranker"):
        load_ranker(path)
    path.write_bytes(b"\xff\xfe")
    with pytest.raises(RankerError, match="cannot read ranker"):
        load_ranker(path)


def test_the_shipped_ranker_loads_and_says_what_it_rests_on() -> None:
    ranker = load_ranker(SHIPPED_RANKER)
    assert "CIFAR-scale" in ranker.fitted_on and ranker.labels >= 40
    assert ranker.features == RANKER_FEATURES
