"""The search-vs-reference benchmark resumes from its rows and reports the gap from them."""
from __future__ import annotations

import pytest

from benchmarks import search_vs_reference as bench
from search_spaces import CIFAR_REFERENCE_ARCHS, TINY_ARCHS

LATENCY_MS = {"swin_cifar": 3.4, "convnext_cifar": 1.7, "l2vit_cifar": 4.5, "cswin_cifar": 3.0, "shvit_cifar": 2.3,
              "qna_cifar": 4.4}


def _rows() -> list[dict]:
    rows = [{"kind": "latency", "name": n, "role": "reference", "digest": CIFAR_REFERENCE_ARCHS[n].digest(), "ms": ms}
            for n, ms in LATENCY_MS.items()]
    pick = TINY_ARCHS["tiny_conv"]
    rows.append({"kind": "pick", "budget": "shvit_cifar", "budget_ms": 2.3, "rank": 0, "trial": 7, "proxy": "meco",
                 "proxy_value": 1.0, "predicted_ms": 2.1, "digest": pick.digest(), "spec": pick.to_dict()})
    rows.append({"kind": "latency", "name": "pick0_shvit_cifar", "role": "search", "digest": pick.digest(), "ms": 2.2})
    return rows


def test_a_damaged_last_line_is_dropped_and_rows_append(tmp_path):
    path = tmp_path / "rows.jsonl"
    bench.append_row({"kind": "latency", "ms": 1.5}, path)
    with path.open("a") as handle:
        handle.write('{"kind": "train')  # killed mid-write
    assert bench.read_rows(path) == [{"kind": "latency", "ms": 1.5}]
    assert bench.read_rows(tmp_path / "missing.jsonl") == []


def test_training_resumes_where_the_rows_stop(monkeypatch, tmp_path):
    rows = _rows()
    done = CIFAR_REFERENCE_ARCHS["convnext_cifar"].digest()
    rows.append({"kind": "training", "name": "convnext_cifar", "digest": done, "seed": 0, "accuracy": 0.5})
    calls, stored = [], tmp_path / "rows.jsonl"
    monkeypatch.setattr(bench, "train_accuracy", lambda spec, data, seed: (calls.append((spec.digest(), seed))
                                                                           or (0.25 + seed / 100, 1.0)))
    monkeypatch.setattr(bench, "ROWS", stored)
    monkeypatch.setattr("nas.data.load_data", lambda path: None)
    bench.train_all(rows)
    # small budget: the pick, convnext and shvit; large: every reference; each (architecture, seed) once
    expected = {(spec.digest(), seed) for spec in [*CIFAR_REFERENCE_ARCHS.values(), TINY_ARCHS["tiny_conv"]]
                for seed in bench.SEEDS} - {(done, 0)}
    assert sorted(calls) == sorted(expected)
    assert len(bench.read_rows(stored)) == len(expected)
    calls.clear()
    bench.train_all(rows)  # everything is in the rows now
    assert calls == []


def test_the_report_gives_each_budget_its_gap_and_the_goal():
    rows = _rows()
    accuracy = {"convnext_cifar": (0.50, 0.52), "shvit_cifar": (0.60, 0.64)}
    for name, values in accuracy.items():
        rows += [{"kind": "training", "name": name, "digest": CIFAR_REFERENCE_ARCHS[name].digest(), "seed": s,
                  "accuracy": a} for s, a in zip(bench.SEEDS, values)]
    rows += [{"kind": "training", "name": "pick0_shvit_cifar", "digest": TINY_ARCHS["tiny_conv"].digest(), "seed": s,
              "accuracy": a} for s, a in zip(bench.SEEDS, (0.66, 0.64))]
    ranker_pick = TINY_ARCHS["tiny_window"]  # a later default proxy's pick: reported beside the first one's
    rows.append({"kind": "pick", "budget": "shvit_cifar", "budget_ms": 2.3, "rank": 0, "trial": 3, "proxy": "ranker",
                 "proxy_value": 0.6, "predicted_ms": 2.0, "digest": ranker_pick.digest(), "spec": ranker_pick.to_dict()})
    rows.append({"kind": "latency", "name": "pick0_shvit_cifar_ranker", "role": "search",
                 "digest": ranker_pick.digest(), "ms": 2.4})  # measured over the budget
    rows += [{"kind": "training", "name": "pick0_shvit_cifar_ranker", "digest": ranker_pick.digest(), "seed": s,
              "accuracy": a} for s, a in zip(bench.SEEDS, (0.67, 0.67))]
    small = bench.report(rows)["budgets"]["shvit_cifar"]
    assert {n["name"] for n in small["networks"]} == {"pick0_shvit_cifar", "pick0_shvit_cifar_ranker",
                                                      "convnext_cifar", "shvit_cifar"}
    assert small["best_reference"] == "shvit_cifar"
    meco, ranker = small["by_proxy"]["meco"], small["by_proxy"]["ranker"]
    assert meco["best_search"] == "pick0_shvit_cifar" and meco["gap_points"] == pytest.approx(3.0)
    assert meco["goal_met"] is True
    assert ranker["gap_points"] == pytest.approx(5.0) and ranker["goal_met"] is False  # 2.4 ms > the 2.3 ms budget
    assert small["best_search"] == small["by_proxy"][bench.DEFAULT_PROXY_WITH_DATA]["best_search"]
    shvit = next(n for n in small["networks"] if n["name"] == "shvit_cifar")
    assert shvit["accuracy_mean"] == pytest.approx(0.62) and shvit["half_range"] == pytest.approx(0.02)
    large = bench.report(rows)["budgets"]["l2vit_cifar"]
    assert large["best_search"] is None and large["gap_points"] is None and large["goal_met"] is False
