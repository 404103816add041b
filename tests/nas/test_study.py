from __future__ import annotations

import multiprocessing

import optuna
import pytest
from optuna.trial import TrialState

from nas import study as study_module
from nas.config import SearchConfig
from nas.study import STUDY_KEYS, StudyError, StudyMirror, load_study, make_sampler, metric_names, open_study
from nas.trial_record import best_record, pareto_records, records
from search_spaces import TINY_ARCHS
from tests.conftest import STUDY_ATTRS, add_trial


@pytest.mark.parametrize("name, kind", [("tpe", optuna.samplers.TPESampler), ("nsga2", optuna.samplers.NSGAIISampler),
                                        ("random", optuna.samplers.RandomSampler), ("gp", optuna.samplers.GPSampler)])
def test_make_sampler(name, kind):
    assert isinstance(make_sampler(name, seed=3, objective="best"), kind)


@pytest.mark.parametrize("name", ["tpe", "nsga2", "random", "gp"])
def test_every_sampler_samples_the_space_past_its_startup_trials(name):
    """Beyond the random start-up (10 trials for TPE and GP): what needs scipy or a model runs here."""
    sampler = make_sampler(name, seed=3, objective="best", trials=14)
    study = optuna.create_study(direction="maximize", sampler=sampler)
    study.optimize(lambda trial: trial.suggest_float("x", -2.0, 3.0) - trial.suggest_int("n", 1, 5) / 7, n_trials=14)
    assert len(study.trials) == 14 and study.best_value > -2.8


def test_records_best_and_pareto(stored_study):
    study, _ = stored_study
    rows = records(study)
    assert [r.state for r in rows] == ["COMPLETE"] * 4 + ["PRUNED", "FAIL"]
    assert [r.feasible for r in rows] == [True, True, True, True, False, False]
    assert rows[4].reason.startswith("over budget") and rows[5].reason == "ProxyError: nan"
    assert rows[2].spec.digest() == rows[2].user_attrs["digest"]
    assert best_record(rows).number == 3
    assert [r.number for r in pareto_records(rows)] == [0, 2, 3]


def test_best_ignores_trials_over_the_budget(stored_study):
    study, _ = stored_study
    rows = records(study)
    over = rows[3].__class__(**{**rows[3].__dict__, "latency_ms": 7.0, "feasible": False})
    assert best_record(rows[:3] + [over]).number == 2
    assert best_record([rows[4], rows[5]]) is None and pareto_records([rows[4]]) == []


def _config(tmp_path, **fields):
    return SearchConfig(**{"target": "cpu", "budget_ms": 5.0, "out": tmp_path, "proxy": "synflow",
                           **fields}).resolved()


def test_open_study_creates_then_resumes_and_refuses_other_settings(tmp_path):
    config = _config(tmp_path)
    study, resumed = open_study(config, dict(STUDY_ATTRS))
    assert not resumed and study.user_attrs["budget_ms"] == 5.0
    assert study.metric_names == metric_names(config) == ["proxy_synflow"]
    again, resumed = open_study(config, dict(STUDY_ATTRS))
    assert resumed and again.study_name == study.study_name
    with pytest.raises(StudyError, match="budget_ms=5.0"):
        open_study(config, {**STUDY_ATTRS, "budget_ms": 7.0})
    with pytest.raises(StudyError, match="objectives"):
        open_study(_config(tmp_path, objective="pareto"), dict(STUDY_ATTRS))
    pareto = _config(tmp_path, objective="pareto", study="other")
    study, _ = open_study(pareto, dict(STUDY_ATTRS))
    assert study.metric_names == ["proxy_synflow", "latency_ms"]


def test_a_study_another_search_creates_first_is_joined_not_a_traceback(tmp_path, monkeypatch):
    """Two searches start the same new study: the one whose create loses the race resumes it, and still refuses
    one made with other settings."""
    config = _config(tmp_path)
    attrs = {**dict.fromkeys(STUDY_KEYS), **STUDY_ATTRS}  # every key a search stores: nothing left to wait for
    open_study(config, attrs)  # the other search, a moment earlier
    monkeypatch.setattr(optuna, "get_all_study_names", lambda storage: [])  # this one looked before it existed
    study, resumed = open_study(config, attrs)
    assert resumed and study.user_attrs["budget_ms"] == 5.0
    with pytest.raises(StudyError, match="budget_ms=5.0"):
        open_study(config, {**attrs, "budget_ms": 7.0})


def test_load_study_lists_the_stored_names(stored_study):
    study, storage = stored_study
    assert load_study("unit-study", storage).study_name == "unit-study"
    with pytest.raises(StudyError, match="studies there: unit-study"):
        load_study("missing", storage)


def test_unusable_storage_is_a_study_error(tmp_path):
    with pytest.raises(StudyError, match="cannot open storage"):
        open_study(_config(tmp_path, storage="notadb://x"), dict(STUDY_ATTRS))


def _finish_two(mirror):
    first, second = mirror.ask(), mirror.ask()
    for trial in (first, second):
        trial.suggest_categorical("arch", tuple(TINY_ARCHS))
        trial.set_user_attr("latency_ms", 1.5)
        trial.set_constraint("latency_over_budget_ms", -3.5)
    return first, second


def test_mirror_stores_finished_trials_whole_at_a_flush(stored_study):
    study, _ = stored_study
    mirror = StudyMirror(study, optuna.samplers.RandomSampler(seed=0), flush_every=100, flush_seconds=1e9)
    assert len(mirror.memory.trials) == 6 and mirror.stored_number == {n: n for n in range(6)}
    first, second = _finish_two(mirror)
    assert mirror.finish(second, [7.0]) == second.number and mirror.finish(first, state=TrialState.PRUNED) == \
        first.number
    assert len(study.get_trials()) == 6  # queued, not stored yet
    mirror.flush()
    assert mirror.stored_number[second.number] == 6 and mirror.stored_number[first.number] == 7
    stored = study.get_trials()[6]
    assert stored.state == TrialState.COMPLETE and stored.values == [7.0]
    assert stored.params == {"arch": second.params["arch"]} and stored.user_attrs["latency_ms"] == 1.5
    assert stored.constraints == {"latency_over_budget_ms": -3.5}
    assert study.get_trials()[7].state == TrialState.PRUNED
    assert best_record(records(study)).number == 6


def test_a_batch_is_one_transaction_and_duplicates_point_at_stored_numbers(stored_study):
    from sqlalchemy import event
    study, _ = stored_study
    mirror = StudyMirror(study, optuna.samplers.RandomSampler(seed=0), flush_every=100, flush_seconds=1e9)
    original = mirror.ask()
    original.suggest_categorical("arch", tuple(TINY_ARCHS))
    number = mirror.finish(original, [5.0])
    twins = [mirror.ask() for _ in range(3)]
    for twin in twins:
        twin.suggest_categorical("arch", tuple(TINY_ARCHS))
        twin.set_user_attr("duplicate_of", number)  # in-memory numbering, as the driver sets it
        mirror.finish(twin, [5.0])
    engine = study._storage._backend.engine
    commits = []

    def count(connection) -> None:
        commits.append(connection)
    mirror._mirror_stored = lambda: []  # reading other drivers' trials back is a read transaction of its own
    event.listen(engine, "commit", count)
    try:
        mirror.flush()
    finally:
        event.remove(engine, "commit", count)
    assert len(commits) == 1  # four trials, one transaction
    stored = study.get_trials()
    assert [t.user_attrs.get("duplicate_of") for t in stored[6:]] == [None, 6, 6, 6]


def test_a_batch_written_trial_reads_back_as_optunas_own_api_stores_it(tmp_path):
    """Every field: params with their distributions, multi-objective values (inf too), user and system
    attributes, intermediate values, state and times; both written into the same study, compared field by field."""
    storage = f"sqlite:///{tmp_path / 'fields.db'}"
    study = optuna.create_study(storage=storage, directions=["maximize", "minimize"])
    mirror = StudyMirror(study, optuna.samplers.RandomSampler(seed=3), flush_every=100, flush_seconds=1e9)
    templates = []
    for state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL):
        trial = mirror.ask()
        trial.suggest_int("depth", 1, 7, step=2)
        trial.suggest_float("ratio", 0.5, 4.0, log=True)
        trial.suggest_categorical("mixer", ("conv", "window", None))
        trial.set_user_attr("arch", {"stages": [1, 2.5, "x"]})
        trial.storage.set_trial_system_attr(trial._trial_id, "constraints", [0.25, -1.0])
        trial.storage.set_trial_intermediate_value(trial._trial_id, 3, 0.125)  # report() is single-objective
        trial.storage.set_trial_intermediate_value(trial._trial_id, 9, float("nan"))
        mirror.finish(trial, [float("inf"), 2.5] if state == TrialState.COMPLETE else None, state=state)
        templates.append(mirror.memory.trials[-1])
    mirror._mirror_stored = lambda: []
    mirror.flush()
    for template in templates:  # the same trials through Optuna's own (slow) path
        study.add_trial(template)
    stored = study.get_trials()
    assert len(stored) == 6
    for ours, optunas in zip(stored[:3], stored[3:]):
        assert ours.number + 3 == optunas.number
        for field in ("state", "values", "params", "distributions", "user_attrs", "system_attrs",
                      "datetime_start", "datetime_complete"):
            assert getattr(ours, field) == getattr(optunas, field), field
        assert ours.intermediate_values[3] == optunas.intermediate_values[3] == 0.125
        assert str(ours.intermediate_values[9]) == str(optunas.intermediate_values[9]) == "nan"


def test_a_flush_brings_in_what_another_driver_stored(stored_study):
    study, storage = stored_study
    first = StudyMirror(study, optuna.samplers.RandomSampler(seed=0), flush_every=100, flush_seconds=1e9)
    other_study = optuna.load_study(study_name=study.study_name, storage=storage)
    second = StudyMirror(other_study, optuna.samplers.RandomSampler(seed=1), flush_every=100, flush_seconds=1e9)
    trial = second.ask()
    trial.suggest_categorical("arch", tuple(TINY_ARCHS))
    second.finish(trial, [9.0])
    second.flush()
    assert first.take_foreign() == []
    first.flush()
    foreign = first.take_foreign()
    assert [t.values for t in foreign] == [[9.0]] and len(first.memory.trials) == 7
    assert first.take_foreign() == []  # taken once


def test_mirror_requeues_interrupted_architectures_not_evaluated_since(stored_study):
    study, _ = stored_study
    add_trial(study, "tiny_qna", 2.0, None, TrialState.FAIL, fail_kind="interrupted", fail_reason="interrupted")
    add_trial(study, "tiny_conv", 1.0, None, TrialState.FAIL, fail_kind="interrupted", fail_reason="interrupted")
    add_trial(study, "tiny_qna", 2.0, None, TrialState.FAIL, fail_kind="interrupted", fail_reason="interrupted")
    mirror = StudyMirror(study, optuna.samplers.RandomSampler(seed=0))
    assert mirror.requeue(records(study)) == 1  # tiny_conv was evaluated (trial 0); tiny_qna queued once
    queued = mirror.ask()
    assert queued.suggest_categorical("arch", tuple(TINY_ARCHS)) == "tiny_qna"
    assert queued.user_attrs["requeued_from"] == 6


def _open_after(barrier, url: str, results) -> None:
    try:
        barrier.wait(timeout=60)
        optuna.get_all_study_names(study_module._storage(url))
        results.put("ok")
    except Exception as error:  # anything else is reported, never left hanging
        results.put(repr(error))


def test_processes_creating_one_new_database_at_once_all_open_it(tmp_path):
    """The dashboard and a search started together both create Optuna's schema in a new file: neither fails."""
    context = multiprocessing.get_context("fork")
    outcomes = []
    for attempt in range(3):
        url = f"sqlite:///{tmp_path / f'new{attempt}.db'}"
        barrier, results = context.Barrier(6), context.Queue()
        workers = [context.Process(target=_open_after, args=(barrier, url, results), daemon=True) for _ in range(6)]
        try:
            for worker in workers:
                worker.start()
            outcomes += [results.get(timeout=120) for _ in workers]
        finally:
            for worker in workers:
                worker.join(timeout=30)
                if worker.is_alive():
                    worker.terminate()
    assert outcomes == ["ok"] * 18


def test_only_a_concurrent_schema_creation_is_retried():
    from optuna.exceptions import StorageInternalError
    from sqlalchemy.exc import IntegrityError, OperationalError

    duplicate = IntegrityError("INSERT INTO alembic_version", {}, Exception("UNIQUE constraint failed"))
    exists = OperationalError("CREATE TABLE studies", {}, Exception("table studies already exists"))
    locked = OperationalError("SELECT", {}, Exception("database is locked"))
    wrapped = StorageInternalError("an error occurred")
    wrapped.__cause__ = exists
    assert study_module._schema_race(duplicate) and study_module._schema_race(exists)
    assert study_module._schema_race(wrapped)
    assert not study_module._schema_race(locked) and not study_module._schema_race(ValueError("already exists"))
