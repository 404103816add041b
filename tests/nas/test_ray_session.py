"""The Ray session of a search: a cluster started by the test, and a local session that leaves no folder behind."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from optuna.trial import TrialState

from nas.search import run_search
from tests.conftest import free_port
from tests.nas.searching import ROOT, search_config, stop_group, stored_study

pytestmark = pytest.mark.slow


def test_search_on_a_ray_head_started_by_the_test(tmp_path, budget_ms):
    import ray

    if ray.is_initialized():
        ray.shutdown()
    port = free_port()
    env = {**os.environ, "RAY_AUTH_MODE": "disabled",
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    ray_bin = Path(sys.executable).with_name("ray")
    # its own temp dir (short: Ray's socket paths must fit 107 bytes), so the cluster address file it writes
    # never points later local searches at this head
    temp_dir = tempfile.mkdtemp(prefix="rayhead", dir="/tmp")
    head = subprocess.Popen([str(ray_bin), "start", "--head", "--block", f"--port={port}", "--num-cpus=2",
                             "--node-ip-address=127.0.0.1", "--include-dashboard=false", "--disable-usage-stats",
                             f"--temp-dir={temp_dir}"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        summary = run_search(search_config(tmp_path, budget_ms, trials=4, ray_address=f"127.0.0.1:{port}"),
                             progress=False)
        assert summary.trials["total"] == 4 and summary.trials["failed"] == 0
        workers = {t.user_attrs["worker"] for t in stored_study(search_config(tmp_path, budget_ms)).get_trials()
                   if t.state == TrialState.COMPLETE}
        assert workers and all(w.split(":")[1] != str(os.getpid()) for w in workers)
    finally:
        stop_group(head)
        shutil.rmtree(temp_dir, ignore_errors=True)


def test_a_local_ray_session_leaves_no_session_folder_behind():
    """Ray keeps each session's folder (/tmp/ray/session_*: logs, sockets) forever; a search's own is removed."""
    temp = Path(tempfile.mkdtemp(prefix="t", dir="/tmp"))  # short: Ray's socket paths must fit in 107 bytes
    script = f"""
import json, os, sys
sys.path.insert(0, {str(ROOT)!r})
from nas.ray_session import ray_session
with ray_session(None, 1):
    print(json.dumps(sorted(os.listdir({str(temp)!r}))))
"""
    try:
        result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                                env={**os.environ, "TMPDIR": str(temp), "RAY_AUTH_MODE": "disabled"})
        assert result.returncode == 0, result.stderr[-2000:]
        (during,) = json.loads(result.stdout.strip().splitlines()[-1])
        assert during.startswith("ray-hnas-")  # the session lived in its own folder under TMPDIR...
        assert list(temp.iterdir()) == []  # ...and nothing is left of it
    finally:
        shutil.rmtree(temp, ignore_errors=True)
