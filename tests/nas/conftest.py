"""Fixtures of the search tests."""
from __future__ import annotations

import pytest

from tests.nas.searching import median_budget_ms


@pytest.fixture(scope="module")
def budget_ms() -> float:
    return median_budget_ms()
