from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from nas.dashboard import DashboardError, check_port, study_url
from tests.conftest import free_port, make_stored_study

ROOT = Path(__file__).resolve().parents[2]


def _get_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read())


def test_study_url():
    assert study_url("127.0.0.1", 8080, 3) == "http://127.0.0.1:8080/dashboard/studies/3"
    assert study_url("::1", 9000, 1) == "http://[::1]:9000/dashboard/studies/1"


def test_check_port_refuses_a_taken_port():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        with pytest.raises(DashboardError, match="cannot listen on 127.0.0.1"):
            check_port("127.0.0.1", taken.getsockname()[1])


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_dashboard_serves_the_study_over_http(request, tmp_path, backend):
    _, storage = make_stored_study(f"sqlite:///{tmp_path / 'study.db'}" if backend == "sqlite" else
                                   request.getfixturevalue("postgres_url"))
    port = free_port()
    server = subprocess.Popen([sys.executable, str(ROOT / "launch.py"), "dashboard", "--study", "unit-study",
                               "--storage", storage, "--port", str(port)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        announced = server.stdout.readline().strip()
        assert announced.endswith(f"http://127.0.0.1:{port}/dashboard/studies/1"), announced
        studies = None
        deadline = time.monotonic() + 60
        while studies is None and time.monotonic() < deadline:
            try:
                studies = _get_json(f"http://127.0.0.1:{port}/api/studies")["study_summaries"]
            except OSError:
                time.sleep(0.3)
        assert studies is not None, "the dashboard never answered"
        (study,) = [s for s in studies if s["study_name"] == "unit-study"]
        detail = _get_json(f"http://127.0.0.1:{port}/api/studies/{study['study_id']}")
        assert len(detail["trials"]) == 6
        assert [t["state"] for t in detail["trials"]].count("Complete") == 4
        assert {"latency_ms", "budget_ms"} <= {a["key"] for a in detail["trials"][0]["user_attrs"]}
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(timeout=10)
        server.stdout.close()
        server.stderr.close()


def test_dashboard_of_an_unknown_study_is_one_line(stored_study):
    _, storage = stored_study
    result = subprocess.run([sys.executable, str(ROOT / "launch.py"), "dashboard", "--study", "nope", "--storage",
                             storage, "--port", str(free_port())], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and result.stderr.count("\n") == 1
    assert result.stderr.startswith("error: no study 'nope'") and "unit-study" in result.stderr
