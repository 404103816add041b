"""The search driver against real Ray (a local instance, and a head started with ``ray start``)."""
from __future__ import annotations

import dataclasses
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import optuna
import pytest
from optuna.trial import TrialState

from latency_tables import LatencyTable, open_table
from nas.config import SearchConfig
from nas.evaluate import EvalRequest, Outcome, evaluate
from nas.search import run_search
from search_spaces import ArchSpec, SearchSpace, count_flops, count_params, sample_archs
from tests.nas.searching import (RESOLUTION, ROOT, TARGET, assert_trials_line_sums, search_config, stop_group,
                                 stored_study)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def local_ray():
    """One local Ray for the module's searches (run_search reuses an initialised Ray and leaves it running)."""
    import ray

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    path = os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": path}})
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the test evaluators below, by value
    yield
    ray.shutdown()


def test_search_end_to_end(tmp_path, budget_ms, local_ray):
    summary = run_search(search_config(tmp_path, budget_ms, onnx=True, top_k=0), progress=False)
    study = stored_study(search_config(tmp_path, budget_ms))
    trials = study.get_trials()
    assert len(trials) == 8 and summary.trials["total"] == 8
    evaluated = [t for t in trials if t.state == TrialState.COMPLETE]
    over = [t for t in trials if t.state == TrialState.PRUNED]
    assert len(evaluated) + len(over) == 8 and evaluated and over
    for trial in over:  # told at once: no worker ever saw them
        assert trial.user_attrs["latency_ms"] > budget_ms and "worker" not in trial.user_attrs
        assert trial.constraints["latency_over_budget_ms"] > 0
        assert trial.user_attrs["prune_reason"].startswith("over budget")
    for trial in evaluated:
        spec = ArchSpec.from_json(trial.user_attrs["arch"])
        assert trial.user_attrs["latency_ms"] <= budget_ms == trial.user_attrs["budget_ms"]
        assert trial.constraints["latency_over_budget_ms"] <= 0
        assert trial.values == [trial.user_attrs["proxy_value"]] and trial.user_attrs["flops"] > 0
        assert trial.user_attrs["params"] == count_params(spec) and trial.user_attrs["worker"] != "driver"
        assert set(trial.user_attrs["latency_breakdown_ms"]) >= {"stem", "stage0", "head"}
        assert spec.digest() == trial.user_attrs["digest"]
    best = max(evaluated, key=lambda t: t.values[0])
    stored = json.loads((tmp_path / "summary.json").read_text())
    assert stored["best"]["trial"] == best.number and stored["budget_ms"] == budget_ms
    assert stored["trials"]["feasible"] == len(evaluated) and stored["trials"]["over_budget"] == len(over)
    assert stored["latency_source"].startswith("estimated: compiled runtime, calibrated on public timm benchmarks")
    assert stored["study"] == "a100-{}-random-synflow".format(stored["study"].split("-")[1])
    assert Path(stored["exports"][0]).name.endswith(f"_t{best.number:04d}")
    assert all((Path(p) / "MODEL_CARD.md").exists() for p in stored["exports"])
    for export in stored["exports"]:  # every export deploys: an ONNX file onnxruntime ran within tolerance
        onnx = json.loads((Path(export) / "export.json").read_text())["onnx"]
        assert (Path(export) / "model.onnx").exists() and onnx["error"] is None and onnx["max_abs_diff"] < 1e-4
        assert onnx["onnxruntime_ms"] is None  # the target (a100) is not this machine
    assert study.user_attrs["target"] == TARGET and study.user_attrs["resolution"] == RESOLUTION
    assert study.metric_names == ["proxy_synflow"]


def test_a_lookup_proxy_settles_every_trial_in_the_driver_without_ray(tmp_path, budget_ms, monkeypatch):
    import nas.search
    monkeypatch.setattr(nas.search, "ray_session", lambda *a: pytest.fail("a lookup search started Ray"))
    config = search_config(tmp_path, budget_ms, proxy="params", trials=12)
    summary = run_search(config, evaluator=lambda *a, **k: pytest.fail("a lookup went to a worker"), progress=False)
    trials = stored_study(config).get_trials()
    evaluated = [t for t in trials if t.state == TrialState.COMPLETE]
    assert len(trials) == 12 and evaluated and summary.trials["total"] == 12
    for trial in evaluated:
        spec = ArchSpec.from_json(trial.user_attrs["arch"])
        assert trial.values == [float(count_params(spec))] and trial.user_attrs["worker"] == "driver"
        assert trial.user_attrs["flops"] == pytest.approx(count_flops(spec, RESOLUTION), rel=0.01)


def test_a_lookup_search_stops_at_its_timeout(tmp_path, budget_ms):
    """No trial waits on a worker, so the deadline is checked between trials, not only between collections."""
    config = dataclasses.replace(search_config(tmp_path, budget_ms, proxy="flops", trials=1_000_000), timeout_s=1.5)
    started = time.monotonic()
    summary = run_search(config, progress=False)
    assert summary.status == "timeout" and time.monotonic() - started < 60
    assert 0 < summary.trials["total"] < 1_000_000 == config.trials
    assert len(stored_study(config).get_trials()) == summary.trials["total"]  # every trial asked was stored


def test_summary_and_pareto_set_are_right_at_thousands_of_trials(tmp_path):
    """2,000 lookup trials on a small space: the summary's counts and Pareto set equal a recount of the storage."""
    space = SearchSpace.from_dict({"base": "cifar", "num_stages": [2], "mixers": ["conv", "window"],
                                   "widths": [[32, 64], [64, 96]], "depths": [[1, 2], [1]], "stem_kinds": ["patch"],
                                   "conv_kernel_sizes": [3, 7], "window_sizes": [4], "mlp_ratios": [2.0, 4.0],
                                   "downsamples": ["conv2x2"], "conv_variants": ["convnext"]})
    config = SearchConfig(target=TARGET, budget_ms=0.5, resolution=32, trials=2000, proxy="params",
                          sampler="nsga2", space=space, out=tmp_path, top_k=0, export=False)
    budget_ms = _latencies_median(config, space)
    config = dataclasses.replace(config, budget_ms=budget_ms)
    summary = run_search(config, progress=False)
    stored = stored_study(config).get_trials()
    by_number = {t.number: t for t in stored}
    duplicates = [t for t in stored if "duplicate_of" in t.user_attrs]
    over = [t for t in stored if t.state == TrialState.PRUNED]
    assert summary.trials["total"] == len(stored) == 2000
    assert summary.trials["duplicates"] == len(duplicates) > 500  # a small space: most proposals repeat
    assert summary.trials["over_budget"] == len(over) > 0
    assert all(t.user_attrs["latency_ms"] > budget_ms for t in over)
    for twin in duplicates:
        original = by_number[twin.user_attrs["duplicate_of"]]
        assert original.user_attrs["digest"] == twin.user_attrs["digest"] and original.values == twin.values
        assert "duplicate_of" not in original.user_attrs
    distinct = [(t.user_attrs["latency_ms"], t.values[0], t.number) for t in stored
                if t.state == TrialState.COMPLETE and "duplicate_of" not in t.user_attrs
                and t.user_attrs["latency_ms"] <= budget_ms]
    front = sorted(n for lat, proxy, n in distinct
                   if not any(l2 <= lat and p2 >= proxy and (l2, p2) != (lat, proxy) for l2, p2, _ in distinct))
    points = {n: (by_number[n].user_attrs["latency_ms"], by_number[n].values[0]) for n in by_number
              if by_number[n].values}
    summary_front = [row["trial"] for row in summary.pareto]
    assert len(set(summary_front)) == len(summary_front) >= 3
    assert {points[n] for n in summary_front} == {points[n] for n in front}  # equal points: the summary keeps one


def _latencies_median(config: SearchConfig, space: SearchSpace) -> float:
    table = open_table(config.target, resolution=config.resolution, create=False)
    return statistics.median(table.predict(spec).latency_ms for spec in sample_archs(30, 0, space))


def test_nsga2_searches_the_pareto_front(tmp_path, budget_ms, local_ray):
    summary = run_search(search_config(tmp_path, budget_ms * 2, sampler="nsga2", trials=6), progress=False)
    study = stored_study(search_config(tmp_path, budget_ms * 2, sampler="nsga2"))
    assert study.metric_names == ["proxy_synflow", "latency_ms"] and len(study.directions) == 2
    for trial in study.get_trials(states=(TrialState.COMPLETE,)):
        assert trial.values[1] == pytest.approx(trial.user_attrs["latency_ms"])
    front = [row["trial"] for row in summary.pareto]
    assert summary.best["trial"] in front
    assert {t.number for t in study.best_trials} >= set(front)


def test_an_architecture_is_evaluated_once(tmp_path, local_ray):
    single = SearchSpace(stem_kinds=("patch",), stem_strides=(4,), num_stages=(3,), widths=((32,), (64,), (96,)),
                         depths=((1,), (1,), (1,)), mlp_ratios=(2.0,), mixers=("conv",), downsamples=("conv2x2",),
                         conv_kernel_sizes=(3,), conv_variants=("convnext",))
    summary = run_search(dataclasses.replace(search_config(tmp_path, 1000.0, trials=5), space=single), progress=False)
    trials = stored_study(search_config(tmp_path, 1000.0)).get_trials()
    originals = [t for t in trials if "duplicate_of" not in t.user_attrs]
    assert len(originals) == 1 and summary.trials["duplicates"] == 4 and summary.trials["feasible"] == 1
    assert all(t.values == originals[0].values for t in trials)
    assert {t.user_attrs.get("duplicate_of") for t in trials if t is not originals[0]} == {originals[0].number}


LOST_ONCE_MARKERS = Path(tempfile.gettempdir()) / "hnas-test-lost-once"


def _fragile_evaluator(request: EvalRequest, data=None) -> Outcome:
    """Kills its own worker when stage 0 is strip attention, and on its first attempt only when it is single-head
    attention (a marker file per architecture remembers it); fails linear ones; evaluates the rest."""
    spec = ArchSpec.from_json(request.spec_json)
    first = spec.stages[0].mixer.kind
    marker = LOST_ONCE_MARKERS / spec.digest()
    if first == "strip" or (first == "single_head" and not marker.exists()):
        marker.touch()
        os.kill(os.getpid(), signal.SIGKILL)
    if first == "linear":
        return Outcome(ok=False, error="ProxyError: synthetic failure")
    return evaluate(request, data)


def test_failed_and_lost_evaluations_are_fail_trials(tmp_path, local_ray):
    shutil.rmtree(LOST_ONCE_MARKERS, ignore_errors=True)
    LOST_ONCE_MARKERS.mkdir()
    summary = run_search(search_config(tmp_path, 1000.0, trials=10, seed=4), evaluator=_fragile_evaluator,
                         progress=False)
    trials = stored_study(search_config(tmp_path, 1000.0)).get_trials()
    kinds = {t.number: ArchSpec.from_json(t.user_attrs["arch"]).stages[0].mixer.kind for t in trials}
    shutil.rmtree(LOST_ONCE_MARKERS, ignore_errors=True)
    assert {"strip", "linear", "single_head"} <= set(kinds.values()), "seed must sample every failure kind"
    for trial in trials:
        if trial.user_attrs.get("duplicate_of") is not None:
            continue
        if kinds[trial.number] == "strip":  # lost twice: run again once, then failed
            assert trial.state == TrialState.FAIL and trial.user_attrs["fail_reason"].startswith("worker lost")
            assert trial.user_attrs["fail_kind"] == "worker_lost"
            assert len(trial.user_attrs["worker_lost_before"]) == 1
        elif kinds[trial.number] == "single_head":  # lost once, then evaluated, and the trial says so
            assert trial.state == TrialState.COMPLETE
            assert [reason.split(":")[0] for reason in trial.user_attrs["worker_lost_before"]] == ["worker lost"]
        elif kinds[trial.number] == "linear":
            assert trial.state == TrialState.FAIL and trial.user_attrs["fail_reason"] == "ProxyError: synthetic failure"
        else:
            assert trial.state == TrialState.COMPLETE
    assert summary.status == "finished" and summary.trials["failed"] >= 2 and summary.trials["total"] == 10


def _reporting_evaluator(request: EvalRequest, data=None, report=None) -> Outcome:
    """A short training in three reports: accuracy ``quality * step / 300``, quality fixed by the architecture;
    stops when `report` says so."""
    outcome = Outcome(ok=True, params=1, flops=1, worker=f"test:{os.getpid()}")
    quality = int(ArchSpec.from_json(request.spec_json).digest()[:4], 16) / 0xFFFF
    for step in (100, 200, 300):
        if report is not None and report(step, quality * step / 300) and step < 300:
            return dataclasses.replace(outcome, value=quality * step / 300,
                                       details={"stopped_early": True, "steps": step})
    return dataclasses.replace(outcome, value=quality, details={"stopped_early": False, "steps": 300})


@pytest.mark.parametrize("pruner", ["median", "none"])
def test_the_median_pruner_stops_short_trainings_behind_the_median(tmp_path, local_ray, pruner):
    rng = np.random.default_rng(0)
    images = tmp_path / "images.npz"
    np.savez(images, x_train=rng.integers(0, 255, (12, 8, 8, 3), dtype=np.uint8), y_train=np.arange(12) % 2,
             x_test=rng.integers(0, 255, (6, 8, 8, 3), dtype=np.uint8), y_test=np.arange(6) % 2)
    # one worker: each report is judged against exactly the trials numbered before it
    config = search_config(tmp_path, 1000.0, trials=12, workers=1, proxy="short_train", data=images, pruner=pruner, seed=3)
    summary = run_search(config, evaluator=_reporting_evaluator, progress=False)
    trials = stored_study(config).get_trials()
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    pruned = [t for t in trials if t.state == TrialState.PRUNED]
    assert len(complete) + len(pruned) == 12 and summary.trials["over_budget"] == 0
    assert summary.trials["pruned"] == len(pruned)
    assert_trials_line_sums(summary)
    assert ("stopped by the pruner" in summary.trials_line()) == bool(pruned)
    if pruner == "none":
        assert not pruned and all(t.intermediate_values == {} for t in complete)
        return
    assert pruned, "the median pruner stopped nothing"
    for trial in complete:
        assert set(trial.intermediate_values) == {100, 200, 300}
    for trial in pruned:  # stopped at a step where it was below the median of the trials completed before it
        step = trial.user_attrs["pruned_at_step"]
        assert step in (100, 200) and max(trial.intermediate_values) == step
        assert trial.user_attrs["prune_reason"].startswith(f"pruned at step {step}")
        earlier = [t.intermediate_values[step] for t in complete if t.number < trial.number]
        assert len(earlier) >= 5 and trial.intermediate_values[step] < np.median(earlier)
    assert summary.best["trial"] in {t.number for t in complete}


def test_rerun_resumes_the_study(tmp_path, budget_ms, local_ray):
    run_search(search_config(tmp_path, budget_ms, trials=3), progress=False)
    def stored() -> dict:
        return {t.number: (t.state, t.values, t.user_attrs.get("arch"))
                for t in stored_study(search_config(tmp_path, budget_ms)).get_trials()}

    before = stored()
    summary = run_search(search_config(tmp_path, budget_ms, trials=5), progress=False)
    after = stored()
    assert len(before) == 3 and len(after) == 5 and summary.trials["total"] == 5
    assert all(after[n] == before[n] for n in before)
    run_search(search_config(tmp_path, budget_ms, trials=5), progress=False)  # nothing left to do
    assert len(stored_study(search_config(tmp_path, budget_ms)).get_trials()) == 5


def _slow_evaluator(request: EvalRequest, data=None) -> Outcome:
    time.sleep(0.5)
    return Outcome(ok=True, value=1.0, params=0, flops=0, worker=str(os.getpid()))


def test_timeout_stops_asking_and_finishes_running_trials(tmp_path, local_ray):
    summary = run_search(search_config(tmp_path, 1000.0, trials=100, timeout_s=1.5), evaluator=_slow_evaluator,
                         progress=False)
    trials = stored_study(search_config(tmp_path, 1000.0)).get_trials()
    assert summary.status == "timeout" and 2 <= len(trials) < 100
    assert all(t.state == TrialState.COMPLETE for t in trials)  # in-flight ones were waited for, not dropped


def two_drivers_on_one_study(tmp_path: Path, storage: str, trials: int = 300) -> list[optuna.trial.FrozenTrial]:
    """A study of 10 trials resumed by two searches at once (Optuna's distributed pattern), each asked for
    `trials` in all; returns the stored trials after both finished."""
    args = [sys.executable, str(ROOT / "launch.py"), "--target", TARGET, "--budget", "1000ms", "--resolution",
            "224", "--proxy", "flops", "--sampler", "tpe", "--study", "shared", "--storage", storage, "--out",
            str(tmp_path), "--no-export", "--quiet"]
    first = subprocess.run([*args, "--trials", "10"], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stderr[-2000:]
    logs = [(tmp_path / f"driver{i}.err").open("w") for i in range(2)]
    drivers = [subprocess.Popen([*args, "--trials", str(trials)], cwd=tmp_path, stdout=subprocess.DEVNULL,
                                stderr=log, start_new_session=True) for log in logs]
    try:
        codes = [driver.wait(timeout=300) for driver in drivers]
    finally:
        for driver, log in zip(drivers, logs):
            stop_group(driver)
            log.close()
    assert codes == [0, 0], [(tmp_path / f"driver{i}.err").read_text()[-2000:] for i in range(2)]
    return optuna.load_study(study_name="shared", storage=storage).get_trials()


def check_split(stored: list[optuna.trial.FrozenTrial], trials: int = 300) -> None:
    """Two drivers split the budget: every trial stored once, whole, numbered without gaps; at most one trial
    over (the other driver's in flight); duplicates marked, bar the rare architecture both drivers proposed in
    their first flush window, before either had seen the other's trials (their samplers are seeded apart)."""
    assert trials <= len(stored) <= trials + 1
    assert [t.number for t in stored] == list(range(len(stored)))
    assert all(t.state == TrialState.COMPLETE and t.values and "arch" in t.user_attrs for t in stored)
    first_of: dict[str, int] = {}
    unmarked = 0
    for t in stored:
        digest, original = t.user_attrs["digest"], t.user_attrs.get("duplicate_of")
        if original is not None:
            assert stored[original].user_attrs["digest"] == digest
        elif digest in first_of:
            unmarked += 1
        first_of.setdefault(digest, t.number)
    assert unmarked <= 3  # measured: 0 in two runs on sqlite (11-40 of 300 while both drivers had one seed)


def test_two_drivers_on_one_sqlite_study_split_its_trials(tmp_path):
    check_split(two_drivers_on_one_study(tmp_path, f"sqlite:///{tmp_path / 'shared.db'}"))


def test_a_study_on_postgresql_is_written_resumed_and_split_by_two_drivers(tmp_path, postgres_url):
    """A team's shared study on a database server: a first run writes it, two drivers resume it at once."""
    check_split(two_drivers_on_one_study(tmp_path, postgres_url))


def test_a_cpu_search_on_a_table_that_does_not_fit_this_machine_stops_or_goes_on_labelled(tmp_path, monkeypatch):
    """On a machine 1.9x slower than its table: exit 2 with one line and nothing written; --accept-stale-table
    searches and labels the summary and model cards; --remeasure times the table again first."""
    import launch
    from tests.latency_tables.test_freshness import RESOLUTION, SPECS, machine_at, stored_table

    table = stored_table(tmp_path)
    machine_at(monkeypatch, table, 1.9)
    predict_ms = table.predict(SPECS[0]).latency_ms
    out = tmp_path / "run"
    argv = ["--target", "cpu", "--budget", "1000ms", "--resolution", str(RESOLUTION), "--latency-db",
            str(tmp_path / "cpu.sqlite"), "--proxy", "params", "--trials", "3", "--space", "cifar",
            "--out", str(out), "--quiet", "--top", "0", "--no-onnx"]
    assert launch.main(argv) == 2
    assert not out.exists()
    stale = launch.main([*argv, "--accept-stale-table"])
    assert stale == 0
    summary = json.loads((out / "summary.json").read_text())
    assert any(note.startswith("STALE: the cpu table does not fit") for note in summary["notes"])
    card = next(out.glob("exports/*/*/MODEL_CARD.md")).read_text()
    assert "Table check before the search: STALE" in card and "1.90x" in card
    assert launch.main([*argv, "--remeasure", "--trials", "4"]) == 0
    assert json.loads((out / "summary.json").read_text())["notes"] == [
        "no --data: scored with the data-free proxy 'params'"]
    assert LatencyTable(table.target, table.db, table.settings).predict(SPECS[0]).latency_ms == \
        pytest.approx(1.9 * predict_ms, rel=1e-6)


