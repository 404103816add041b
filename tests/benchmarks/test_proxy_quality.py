from __future__ import annotations

import math

import pytest

from benchmarks.proxy_quality import _log_rank_sum, az_nas_summary, noise_ceiling, with_mean_label


def _row(digest: str, accuracy: float, naswot: float) -> dict:
    return {"digest": digest, "trained_accuracy": accuracy, "proxies": {"naswot": {"value": naswot, "seconds": 0.1}}}


def test_noise_ceiling_compares_two_trainings_on_the_retested_subset_only():
    rows = [_row("a", 0.50, 1.0), _row("b", 0.60, 3.0), _row("c", 0.55, 2.0), _row("d", 0.70, 0.5)]
    retests = {"a": 0.52, "b": 0.57, "c": 0.58}  # d was not trained again; b and c swap places
    ceiling = noise_ceiling(rows, retests)
    assert ceiling["archs"] == 3
    assert ceiling["spearman_between_trainings"] == pytest.approx(0.5)
    assert ceiling["median_abs_diff"] == pytest.approx(0.03)
    assert ceiling["proxies_on_this_subset"]["naswot"] == pytest.approx(1.0)  # ranks a < c < b on the first run


def test_log_rank_sum_is_azs_aggregation():
    combined = _log_rank_sum([[0.1, 0.3, 0.2], [5.0, 4.0, 6.0]])  # ranks 1,3,2 and 2,1,3 of N = 3
    assert combined == pytest.approx([math.log(1 / 3) + math.log(2 / 3), math.log(1) + math.log(1 / 3),
                                      math.log(2 / 3) + math.log(1)])


def test_az_nas_summary_ranks_the_aggregate_and_each_component():
    rows = [{"trained_accuracy": a, "proxies": {"flops": {"value": f, "seconds": 0.1}}}
            for a, f in [(0.5, 1.0), (0.6, 2.0), (0.7, 3.0), (0.8, 4.0)]]
    components = [{"expressivity": e, "progressivity": -e, "trainability": 0.0 - i, "seconds": 0.2}
                  for i, e in enumerate([1.0, 2.0, 3.0, 4.0])]
    summary = az_nas_summary(rows, components)
    assert summary["components"]["expressivity"] == pytest.approx(1.0)
    assert summary["components"]["progressivity"] == pytest.approx(-1.0)
    assert summary["components"]["flops"] == pytest.approx(1.0)
    assert summary["seconds_per_arch"] == pytest.approx(0.3)
    assert summary["of"] == ["expressivity", "progressivity", "trainability", "flops"]
    assert -1.0 <= summary["spearman"] <= 1.0


def test_mean_label_averages_the_trainings_of_retested_architectures_only():
    rows = [_row("a", 0.50, 1.0), _row("b", 0.60, 3.0)]
    labelled = with_mean_label(rows, {"a": 0.56})
    assert [r["trained_accuracy"] for r in labelled] == pytest.approx([0.53, 0.60])
    assert [r["trainings"] for r in labelled] == [2, 1]
    assert [r["first_training_accuracy"] for r in labelled] == [0.50, 0.60]
    assert rows[0]["trained_accuracy"] == 0.50  # the cached rows are not changed


def test_noise_ceiling_of_the_mean_of_two_trainings_is_spearman_brown():
    rows = [_row(d, a, 0.0) for d, a in zip("abcde", [0.50, 0.60, 0.55, 0.70, 0.65])]
    # ranks 1,3,2,5,4 then 1,4,2,5,3
    ceiling = noise_ceiling(rows, {"a": 0.51, "b": 0.66, "c": 0.56, "d": 0.69, "e": 0.64})
    assert ceiling["spearman_between_trainings"] == pytest.approx(0.9)
    assert ceiling["mean_of_two_reliability"] == pytest.approx(1.8 / 1.9)
    assert ceiling["ceiling_against_mean_of_two"] == pytest.approx(math.sqrt(1.8 / 1.9))
    # a third training: corr(X3, (X1 + X2) / 2) = r / sqrt((1 + r) / 2) when all pairs agree at r
    assert ceiling["one_training_against_mean_of_two"] == pytest.approx(0.9 / math.sqrt(0.95))


def test_cached_rows_get_only_the_proxies_added_since(monkeypatch):
    from benchmarks import proxy_quality
    from search_spaces import TINY_ARCHS

    spec = TINY_ARCHS["tiny_conv"]
    cached = {"digest": spec.digest(), "spec": spec.to_dict(),
              "proxies": {name: {"value": 1.0, "seconds": 0.1} for name in proxy_quality.PROXIES if name != "meco"}}
    complete = {**cached, "proxies": {name: {"value": 1.0, "seconds": 0.1} for name in proxy_quality.PROXIES}}
    asked = []

    def scorer(spec, data, seed, names):
        asked.append((spec.digest(), seed, list(names)))
        return {name: {"value": 2.0, "seconds": 0.2} for name in names}
    assert proxy_quality._add_new_proxies([cached, complete], None, 7, scorer) == 1
    assert asked == [(spec.digest(), 7, ["meco"])]
    assert cached["proxies"]["meco"] == {"value": 2.0, "seconds": 0.2} and cached["proxies"]["naswot"]["value"] == 1.0
