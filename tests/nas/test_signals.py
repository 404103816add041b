"""Stopping a search: Ctrl-C, SIGTERM and SIGKILL of a real search process lose no completed trial; the handlers
themselves raise once, record, and restore."""
from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from nas.search import SearchStopped, SearchSummary, deferred_stops, stop_on_sigterm
from tests.nas.searching import RESOLUTION, ROOT, TARGET, assert_trials_line_sums, stop_group

pytestmark = pytest.mark.slow


_SLOW_SEARCH = textwrap.dedent("""
    import signal, sys, time
    # Ctrl-C as at a terminal: a job started in the background of a non-interactive shell (as CI may run the
    # tests) inherits SIGINT ignored, and Python then keeps ignoring it
    signal.signal(signal.SIGINT, signal.default_int_handler)
    sys.path.insert(0, {root!r})
    import nas.search
    from nas.evaluate import evaluate

    def slow(request, data=None):
        time.sleep({sleep_s})
        return evaluate(request, data)

    original = nas.search.run_search
    nas.search.run_search = lambda config, **kw: original(config, evaluator=slow, **kw)
    import launch
    sys.exit(launch.main(sys.argv[1:]))
""")


def _stop_slow_search(tmp_path: Path, args: list[str], stop_signal: int, env: dict) -> tuple[int, str, dict]:
    """Start the search (1 s a trial), send `stop_signal` once 2 trials are stored: ``(exit code, stderr,
    {number: (values, arch)} of the trials completed before the signal)``."""
    slow = tmp_path / "slow_search.py"
    slow.write_text(_SLOW_SEARCH.format(root=str(ROOT), sleep_s=1.0))
    # output to a file, not a pipe: a pipe nobody reads blocks the search once Ray's warnings fill its buffer
    log = tmp_path / "search.err"
    with log.open("w") as err, (tmp_path / "search.out").open("w") as out:
        process = subprocess.Popen([sys.executable, str(slow), *args], cwd=tmp_path, env=env, stdout=out,
                                   stderr=err, text=True, start_new_session=True)
    storage = tmp_path / "study.db"
    deadline = time.monotonic() + 150
    completed: dict = {}
    while time.monotonic() < deadline and len(completed) < 2 and process.poll() is None:
        time.sleep(0.5)
        if storage.exists():
            with contextlib.suppress(Exception):
                study = optuna.load_study(study_name=None, storage=f"sqlite:///{storage}")
                completed = {t.number: (t.values, t.user_attrs["arch"])
                             for t in study.get_trials(states=(TrialState.COMPLETE,))}
    if len(completed) < 2:
        stop_group(process)
        pytest.fail(f"the search completed {len(completed)} trials (exit {process.returncode}); its output ends:\n"
                    + log.read_text()[-3000:])
    process.send_signal(stop_signal)
    try:
        process.wait(timeout=60)
    finally:
        stop_group(process)
    return process.returncode, log.read_text(), completed


def _assert_kept(storage: Path, completed: dict) -> dict:
    """Every trial completed before the interrupt is stored intact; returns the stored trials by number."""
    study = optuna.load_study(study_name=None, storage=f"sqlite:///{storage}")
    stored = {t.number: t for t in study.get_trials()}
    for number, (values, arch) in completed.items():
        assert stored[number].state == TrialState.COMPLETE
        assert stored[number].values == values and stored[number].user_attrs["arch"] == arch
    assert not [t for t in stored.values() if t.state == TrialState.RUNNING]
    return stored


def _slow_args(tmp_path: Path, budget_ms: float, trials: int) -> list[str]:
    return ["--target", TARGET, "--budget", f"{budget_ms * 3:.4f}ms", "--resolution", str(RESOLUTION), "--trials",
            str(trials), "--workers", "2", "--proxy", "synflow", "--sampler", "random", "--out", str(tmp_path),
            "--quiet", "--no-onnx"]


def test_sigint_then_rerun_loses_no_completed_trial(tmp_path, budget_ms):
    trials = 30  # at 1 s a trial on 2 workers, ~14 s still to go when the test interrupts after 2 completed
    args = _slow_args(tmp_path, budget_ms, trials)
    env = {**os.environ, "RAY_AUTH_MODE": "disabled"}
    code, stderr, completed = _stop_slow_search(tmp_path, args, signal.SIGINT, env)
    assert code == 130, stderr[-3000:]
    assert stderr.strip().splitlines()[-1].startswith("interrupted: finished trials are stored")
    interrupted = json.loads((tmp_path / "summary.json").read_text())
    assert interrupted["status"] == "interrupted"

    result = subprocess.run([sys.executable, str(ROOT / "launch.py"), *args], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    stored = _assert_kept(tmp_path / "study.db", completed)
    counted = [t for t in stored.values() if t.user_attrs.get("fail_kind") != "interrupted"]
    assert len(counted) == trials
    assert json.loads((tmp_path / "summary.json").read_text())["status"] == "finished"


def test_sigkill_of_a_lookup_search_loses_at_most_the_unflushed_batch(tmp_path):
    """Batched writes: a killed driver leaves whole trials numbered without gaps; the same command resumes to the
    exact total, evaluating what the lost batch held again."""
    # 224 px: every block's counts are shipped, so a trial is a lookup (~5 ms), not a first count
    args = ["--target", TARGET, "--budget", "1000ms", "--resolution", "224", "--proxy", "flops", "--sampler", "random",
            "--out", str(tmp_path), "--no-export", "--quiet"]
    storage = tmp_path / "study.db"
    with (tmp_path / "search.err").open("w") as err:
        process = subprocess.Popen([sys.executable, str(ROOT / "launch.py"), *args, "--trials", "1000000"],
                                   cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=err, start_new_session=True)
    try:
        deadline, stored = time.monotonic() + 120, 0
        while stored < 150 and time.monotonic() < deadline and process.poll() is None:
            time.sleep(0.3)
            with contextlib.suppress(Exception):
                stored = len(optuna.load_study(study_name=None, storage=f"sqlite:///{storage}").get_trials())
        assert stored >= 150, (tmp_path / "search.err").read_text()[-2000:]
        os.kill(process.pid, signal.SIGKILL)
        process.wait(timeout=30)
    finally:
        stop_group(process)
    kept = optuna.load_study(study_name=None, storage=f"sqlite:///{storage}").get_trials()
    assert [t.number for t in kept] == list(range(len(kept)))
    assert all(t.state in (TrialState.COMPLETE, TrialState.PRUNED) and "arch" in t.user_attrs for t in kept)
    assert all(t.values for t in kept if t.state == TrialState.COMPLETE)
    total = len(kept) + 40
    result = subprocess.run([sys.executable, str(ROOT / "launch.py"), *args, "--trials", str(total)], cwd=tmp_path,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    resumed = optuna.load_study(study_name=None, storage=f"sqlite:///{storage}").get_trials()
    assert [t.number for t in resumed] == list(range(total))
    assert json.loads((tmp_path / "summary.json").read_text())["trials"]["total"] == total


def test_sigterm_stops_the_search_as_ctrl_c_does(tmp_path, budget_ms):
    """`kill <pid>` (a job scheduler's stop): in-flight trials stored as interrupted, summary written, exit 143 —
    not Ray's own SIGTERM handler, which exits at once."""
    env = {**os.environ, "RAY_AUTH_MODE": "disabled"}
    code, stderr, completed = _stop_slow_search(tmp_path, _slow_args(tmp_path, budget_ms, 30), signal.SIGTERM, env)
    assert code == 143, stderr[-3000:]
    assert stderr.strip().splitlines()[-1].startswith("interrupted: finished trials are stored")
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["status"] == "interrupted"
    stored = _assert_kept(tmp_path / "study.db", completed)
    assert summary["trials"]["total"] == len(stored) < 30
    interrupted = [t for t in stored.values() if t.user_attrs.get("fail_kind") == "interrupted"]
    assert summary["trials"]["interrupted"] == len(interrupted) <= 2  # at most one a worker was in flight
    assert_trials_line_sums(SearchSummary(**summary))


def _signal_self(signum: int) -> None:
    os.kill(os.getpid(), signum)
    for _ in range(100):  # the handler runs in the main thread at the next bytecode; sleep is cut short if it raises
        time.sleep(0.01)


def test_stop_on_sigterm_raises_once_then_records_and_restores_the_handler():
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(SearchStopped) as stopped:
        with stop_on_sigterm() as received:
            _signal_self(signal.SIGTERM)
    assert stopped.value.signum == received.signum == signal.SIGTERM
    assert signal.getsignal(signal.SIGTERM) is before
    with stop_on_sigterm() as received:
        with contextlib.suppress(SearchStopped):
            _signal_self(signal.SIGTERM)
        _signal_self(signal.SIGTERM)  # a second kill, as during the cleanup: recorded, not raised
    assert received.signum == signal.SIGTERM


def test_deferred_stops_ignore_ctrl_c_and_sigterm_then_restore_them():
    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    with deferred_stops():
        _signal_self(signal.SIGINT)
        _signal_self(signal.SIGTERM)
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before
