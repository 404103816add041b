"""Test-wide setup: Triton runs through its interpreter on machines without a GPU (set before triton's import);
studies built trial by trial (no Ray, no proxies) for the study, export, dashboard and launch tests."""
from __future__ import annotations

import os
import socket
import sys
from pathlib import Path

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

# Tests run small shapes: one intra-op thread is faster than two there, and immune to a busy neighbour core
# (OpenMP threads spin-wait; with another process on the second core a tiny backward took 80x longer).
torch.set_num_threads(1)

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now (for servers the tests start)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


# ------------------------------------------------------------------------------------------ stored studies
import optuna  # noqa: E402
import pytest  # noqa: E402
from optuna.distributions import CategoricalDistribution  # noqa: E402
from optuna.trial import TrialState, create_trial  # noqa: E402

from search_spaces import TINY_ARCHS  # noqa: E402


STUDY_ATTRS = {"target": "cpu", "budget_ms": 5.0, "objective": "best", "proxy": "synflow", "sampler": "tpe",
               "batch": 1, "resolution": 32, "dtype": "fp32", "proxy_resolution": 32, "latency_table": "sqlite://",
               "data": None, "seed": 0, "command": "python launch.py --target cpu --budget 5ms"}


def add_trial(study: optuna.Study, arch: str, latency_ms: float, proxy: float | None,
              state: TrialState = TrialState.COMPLETE, **attrs) -> None:
    """One finished trial as the search driver stores it."""
    spec = TINY_ARCHS[arch]
    user_attrs = {"arch": spec.to_json(), "digest": spec.digest(), "latency_ms": latency_ms,
                  "budget_ms": study.user_attrs["budget_ms"], "latency_source": "measured (cpu table)",
                  "latency_breakdown_ms": {"stem": 0.1, "stage0": latency_ms - 0.2, "head": 0.1}, "params": 1000,
                  "flops": 2000, **attrs}
    study.add_trial(create_trial(
        state=state, values=[proxy] if state == TrialState.COMPLETE else None,
        params={"arch": arch}, distributions={"arch": CategoricalDistribution(tuple(TINY_ARCHS))},
        user_attrs=user_attrs,
        system_attrs={"constraints:latency_over_budget_ms": latency_ms - study.user_attrs["budget_ms"]}))


@pytest.fixture
def stored_study(tmp_path: Path) -> tuple[optuna.Study, str]:
    """A sqlite study with a known front (`make_stored_study`)."""
    return make_stored_study(f"sqlite:///{tmp_path / 'study.db'}")


def make_stored_study(storage: str) -> tuple[optuna.Study, str]:
    """A study at `storage` with a known front: trials 0..5 (proxy, latency_ms) below; 4 is over budget, 5
    failed."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(study_name="unit-study", storage=storage, direction="maximize")
    for key, value in STUDY_ATTRS.items():
        study.set_user_attr(key, value)
    add_trial(study, "tiny_conv", 1.0, 3.0)           # 0: on the front (fastest)
    add_trial(study, "tiny_window", 2.0, 2.5)         # 1: dominated by 0
    add_trial(study, "tiny_linear", 3.0, 4.0)         # 2: on the front
    add_trial(study, "tiny_strip", 4.5, 5.0)          # 3: best within budget
    add_trial(study, "tiny_qna", 9.0, None, TrialState.PRUNED, prune_reason="over budget: 9 ms > 5 ms")  # 4
    add_trial(study, "tiny_single_head", 2.2, None, TrialState.FAIL, fail_reason="ProxyError: nan",
              fail_kind="evaluation")  # 5
    return study, storage


@pytest.fixture
def stored_study_file(stored_study, tmp_path: Path) -> tuple[str, Path]:
    """``(storage URL, output folder)`` of `stored_study`, as a search would have left them."""
    return stored_study[1], tmp_path


# ------------------------------------------------------------------------------------------ PostgreSQL
@pytest.fixture(scope="session")
def postgres_server():
    """A PostgreSQL server of this session's own (tests/postgres.py), stopped by its PID at the end; the tests
    that need it are skipped, saying why, where no server binary or no psycopg is installed."""
    from tests.postgres import find_binaries, start_server

    if find_binaries() is None:
        pytest.skip("no PostgreSQL server binaries (Debian: apt-get install postgresql)")
    pytest.importorskip("psycopg", reason="psycopg is not installed (pip install -e '.[postgres]')")
    server = start_server(free_port())
    yield server
    server.stop()


@pytest.fixture
def postgres_url(postgres_server) -> str:
    """The SQLAlchemy URL of a new, empty database on the session's PostgreSQL server."""
    return postgres_server.new_database()
