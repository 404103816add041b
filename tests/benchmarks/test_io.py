"""Shared benchmark helpers: rank correlations and atomic result files."""
from __future__ import annotations

import json

import pytest

from benchmarks._io import kendall, spearman, write_json_atomic


def test_rank_correlations_on_known_cases() -> None:
    assert spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    assert spearman([1, 2, 3, 4], [1, 3, 2, 4]) == pytest.approx(0.8)
    assert kendall([1, 2, 3, 4], [1, 3, 2, 4]) == pytest.approx(4 / 6)
    assert kendall([1, 1, 2], [1, 2, 3]) == pytest.approx(2 / (2 * 3) ** 0.5)  # tau-b with a tie


def test_write_json_atomic_replaces_whole_files(tmp_path) -> None:
    path = tmp_path / "deep" / "result.json"
    write_json_atomic(path, {"a": 1})
    write_json_atomic(path, {"b": [1, 2]})
    assert json.loads(path.read_text()) == {"b": [1, 2]}
    assert [p.name for p in path.parent.iterdir()] == ["result.json"]  # no temporary left behind
    with pytest.raises(ValueError):
        write_json_atomic(path, {"nan": float("nan")})
    assert json.loads(path.read_text()) == {"b": [1, 2]}
