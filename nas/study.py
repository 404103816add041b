"""The Optuna study of a search: creation and resumption, samplers, and reading trials back as `TrialRecord`s.

A study stores, besides Optuna's own data, what it was created for (study user attributes ``target``,
``budget_ms``, ``proxy``, ``objective``, latency-table settings...), so a resume with other settings is refused
and an export can describe the search without its command line. Every trial stores its architecture, latency
(with breakdown and source), budget, params, FLOPs and proxy score as user attributes: the dashboard shows them.
"""
from __future__ import annotations

import copy
import datetime
import json
import logging
import time
import warnings
from pathlib import Path
from typing import Any

import optuna
from sqlalchemy import event
from sqlalchemy.exc import DatabaseError, IntegrityError
from optuna.exceptions import ExperimentalWarning
from optuna.trial import FrozenTrial, TrialState

from common.errors import UserFacingError
from common.sqlite import SQLITE_BUSY_TIMEOUT_MS, apply_pragmas
from nas.config import ConfigError, SearchConfig
from nas.trial_record import Attr, TrialRecord

__all__ = [
    "StudyError", "STUDY_KEYS", "make_sampler", "open_study", "load_study", "StudyMirror", "metric_names",
]

_log = logging.getLogger(__name__)

# Opening a new database creates Optuna's schema; another process (the dashboard, a second search) creating it at
# the same moment makes one of them fail on a duplicate row or table. The loser retries and finds the schema made.
_SCHEMA_RACE_RETRIES = 5
_FINISHED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
# Study user attributes that must match when a study is resumed.
STUDY_KEYS = ("space", "target", "budget_ms", "objective", "proxy", "batch", "resolution", "dtype", "runtime",
              "proxy_resolution")
NSGA2_POPULATION = 24  # small enough that 100 trials make four generations; more trials, larger populations


class StudyError(UserFacingError, RuntimeError):
    """A study cannot be created, resumed or read; the message says which study and why."""


def nsga2_population(trials: int) -> int:
    """NSGA-II's population for a study of `trials`: 24 up to ~500 trials (four generations in 100), then a
    twentieth of the trials, at most 200 (fifty generations in 10,000)."""
    return max(NSGA2_POPULATION, min(200, trials // 20))


def make_sampler(name: str, seed: int, objective: str, trials: int = 100) -> optuna.samplers.BaseSampler:
    """The Optuna sampler called `name` for a study of `trials`. The budget reaches every one of them as a trial
    constraint (``trial.set_constraint``): TPE and NSGA-II rank infeasible trials below feasible ones."""
    warnings.filterwarnings("ignore", category=ExperimentalWarning, module="optuna")  # group=, set_metric_names
    if name == "tpe":
        # constant_liar: trials still running count as bad, so parallel workers do not all get the same proposal.
        return optuna.samplers.TPESampler(seed=seed, multivariate=True, group=True, constant_liar=True,
                                          n_startup_trials=10)
    if name == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed, population_size=nsga2_population(trials))
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if name == "gp":
        # the space is conditional (a stage's mixer decides its other parameters): GP samples those at random
        return optuna.samplers.GPSampler(seed=seed, n_startup_trials=10, warn_independent_sampling=False)
    raise ConfigError(f"unknown sampler {name!r}")


def metric_names(config: SearchConfig) -> list[str]:
    """Objective names for the dashboard: the proxy, and latency in ms for Pareto searches."""
    names = [f"proxy_{config.proxy}"]
    return names + ["latency_ms"] if config.objective == "pareto" else names


def _refuse_latency_table(url: str) -> None:
    """`StudyError` if `url` is a latency table's database (Optuna would add its 13 tables to it)."""
    from sqlalchemy import create_engine, inspect
    from sqlalchemy.engine import make_url
    try:
        parsed = make_url(url)
    except Exception:  # a bad URL: RDBStorage says so below
        return
    if parsed.get_backend_name() == "sqlite" and not (parsed.database and Path(parsed.database).is_file()):
        return  # a new sqlite file (connecting would create it) or in-memory
    try:
        engine = create_engine(parsed)
        try:
            with engine.connect() as connection:
                present = set(inspect(connection).get_table_names())
        finally:
            engine.dispose()
    except Exception:  # unreachable or no driver: RDBStorage gives the message
        return
    from latency_tables.storage import LatencyEntryRow
    if LatencyEntryRow.__tablename__ in present and "studies" not in present:
        raise StudyError(f"{parsed.render_as_string(hide_password=True)} is a latency table, not a study storage; "
                         f"pass another --storage (nothing was written)")


def _storage(url: str) -> optuna.storages.BaseStorage:
    _refuse_latency_table(url)
    engine_kwargs: dict[str, Any] = {}
    if url.startswith("sqlite"):
        engine_kwargs["connect_args"] = {"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000}  # wait for readers, not fail
    for attempt in range(_SCHEMA_RACE_RETRIES + 1):
        try:
            storage = optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs)
            break
        except Exception as error:  # SQLAlchemy raises many kinds for bad URLs and unreachable databases
            if attempt == _SCHEMA_RACE_RETRIES or not _schema_race(error):
                raise StudyError(f"cannot open storage {url}: {str(error).splitlines()[0]}") from None
            time.sleep(0.05 * (attempt + 1))
    if url.startswith("sqlite"):
        event.listen(storage.engine, "connect", lambda connection, record: apply_pragmas(connection))
        storage.engine.dispose()
    return storage


def _schema_race(error: BaseException | None) -> bool:
    """Whether `error` (or the error Optuna wrapped in it) is another process creating Optuna's schema at the same
    time as this one: a duplicate row (IntegrityError) or a table that already exists (sqlite's
    OperationalError, PostgreSQL's ProgrammingError)."""
    while error is not None:
        if isinstance(error, IntegrityError) or (isinstance(error, DatabaseError) and "already exists" in str(error)):
            return True
        error = error.__cause__
    return False


def open_study(config: SearchConfig, study_attrs: dict[str, Any]) -> tuple[optuna.Study, bool]:
    """Create the study of a resolved `config`, or resume it; returns ``(study, resumed)``.

    Raises:
        StudyError: the storage cannot be opened, or the stored study was made with different settings.
    """
    storage = _storage(config.storage)
    directions = ["maximize", "minimize"] if config.objective == "pareto" else ["maximize"]
    sampler = optuna.samplers.RandomSampler()  # never asked: `StudyMirror` samples on its in-memory copy
    if config.study in optuna.get_all_study_names(storage):
        return _resume(config, storage, sampler, study_attrs, directions), True
    try:
        study = optuna.create_study(study_name=config.study, storage=storage, sampler=sampler, directions=directions)
    except optuna.exceptions.DuplicatedStudyError:  # another search created it a moment ago: join it
        return _resume(config, storage, sampler, study_attrs, directions, wait_for_attrs_s=10.0), True
    for key, value in study_attrs.items():
        study.set_user_attr(key, value)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ExperimentalWarning)
        study.set_metric_names(metric_names(config))
    return study, False


def _resume(config: SearchConfig, storage, sampler, study_attrs: dict[str, Any], directions: list[str],
            wait_for_attrs_s: float = 0.0) -> optuna.Study:
    """Load the stored study of `config`, refusing one made with other settings. A study that another search has
    just created may not carry its settings yet: wait up to `wait_for_attrs_s` for them."""
    study = optuna.load_study(study_name=config.study, storage=storage, sampler=sampler)
    waited_until = time.monotonic() + wait_for_attrs_s
    while not set(STUDY_KEYS) <= set(study.user_attrs) and time.monotonic() < waited_until:
        time.sleep(0.05)
    stored = study.user_attrs
    for key in STUDY_KEYS:
        if key in stored and stored[key] != study_attrs.get(key):
            raise StudyError(f"study {config.study!r} was made with {key}={stored[key]!r}, not "
                             f"{study_attrs.get(key)!r}; use the same settings or another --study")
    if [d.name.lower() for d in study.directions] != directions:
        raise StudyError(f"study {config.study!r} has objectives {len(study.directions)}, this search "
                         f"{len(directions)}; use the same --sampler/--objective or another --study")
    return study


def load_study(name: str, storage_url: str) -> optuna.Study:
    """A stored study, to export or show; `StudyError` listing the stored names if there is no such study."""
    storage = _storage(storage_url)
    names = optuna.get_all_study_names(storage)
    if name not in names:
        known = ", ".join(names) if names else "none"
        raise StudyError(f"no study {name!r} in {storage_url}; studies there: {known}")
    return optuna.load_study(study_name=name, storage=storage)


class StudyMirror:
    """The sampler's working copy of a stored study, writing finished trials to the storage in batches.

    Ask, sampling and tell run on an in-memory study; finished trials queue and reach the storage in one
    transaction per batch (`flush`: every `flush_every` trials or `flush_seconds`, whichever comes first, and
    whenever the driver stops). Written one by one, a trial of this space costs ~15-20 ms of sqlite commits; in a
    batch of 64, well under 1 ms. What a stop keeps: Ctrl-C and SIGTERM flush every finished trial; a driver
    killed outright (SIGKILL) loses the queued ones (at most `flush_seconds` of work), which the next run evaluates
    again. Numbers: `finish` returns the trial's number in the in-memory study; a ``duplicate_of`` attribute set
    in that numbering is rewritten to the stored numbering as the trial is written. Each flush also brings in
    the trials other drivers stored since (`foreign`), so several drivers on one study share its samples.
    """

    def __init__(self, stored: optuna.Study, sampler: optuna.samplers.BaseSampler,
                 pruner: optuna.pruners.BasePruner | None = None, flush_every: int = 64,
                 flush_seconds: float = 0.5) -> None:
        self.stored = stored
        self.memory = optuna.create_study(storage=optuna.storages.InMemoryStorage(), sampler=sampler,
                                          pruner=pruner or optuna.pruners.NopPruner(), directions=stored.directions)
        self.stored_number: dict[int, int] = {}  # in-memory trial number -> stored trial number
        self.memory_number: dict[int, int] = {}  # stored -> in-memory
        self.flush_every, self.flush_seconds = flush_every, flush_seconds
        self.pending: list[optuna.Trial] = []
        self.foreign: list[FrozenTrial] = []  # stored by other drivers, mirrored here, not yet taken
        self.last_flush = time.monotonic()
        self.flushes = 0
        self._mirror_stored()

    def _mirror_stored(self) -> list[FrozenTrial]:
        """Add the stored finished trials this mirror has not seen to the in-memory study; returns them."""
        new = [t for t in self.stored.get_trials(deepcopy=False, states=_FINISHED) if t.number not in
               self.memory_number]
        for trial in new:
            self.memory.add_trial(trial)
            number = len(self.memory.get_trials(deepcopy=False)) - 1
            self.stored_number[number], self.memory_number[trial.number] = trial.number, number
        return new

    def ask(self) -> optuna.Trial:
        return self.memory.ask()

    def finish(self, trial: optuna.Trial, values: list[float] | None = None,
               state: TrialState = TrialState.COMPLETE) -> int:
        """Tell `trial` (``values`` for COMPLETE) and queue it for the storage; returns its in-memory number.
        Flushes when the queue is due."""
        self.memory.tell(trial, values, state=state)
        self.pending.append(trial)
        if len(self.pending) >= self.flush_every or time.monotonic() - self.last_flush >= self.flush_seconds:
            self.flush()
        return trial.number

    def take_foreign(self) -> list[FrozenTrial]:
        """The trials other drivers stored that the flushes since the last call brought in."""
        foreign, self.foreign = self.foreign, []
        return foreign

    def flush(self) -> None:
        """Write the queued trials in one transaction, then mirror what other drivers stored meanwhile (kept for
        `take_foreign`)."""
        if self.pending:
            frozen = []
            for trial in self.pending:
                record = copy.copy(self.memory._storage.get_trial(trial._trial_id))
                record.user_attrs = dict(record.user_attrs)
                frozen.append((trial.number, record))
            for memory_number, stored_number in zip([n for n, _ in frozen], _write_trials(
                    self.stored, [record for _, record in frozen], self.stored_number)):
                self.stored_number[memory_number], self.memory_number[stored_number] = stored_number, memory_number
            self.pending.clear()
        self.last_flush = time.monotonic()
        self.flushes += 1
        self.foreign.extend(self._mirror_stored())

    def requeue(self, rows: list[TrialRecord]) -> int:
        """Queue the architectures that an interrupt cut short and no later trial evaluated; returns how many."""
        evaluated = {r.spec.digest() for r in rows if r.spec is not None and (
            r.state == "COMPLETE" or r.user_attrs.get(Attr.FAIL_KIND) in ("evaluation", "worker_lost"))}
        queued = 0
        for row in rows:
            if row.user_attrs.get(Attr.FAIL_KIND) != "interrupted" or row.spec is None:
                continue
            if row.spec.digest() in evaluated:
                continue
            evaluated.add(row.spec.digest())
            self.memory.enqueue_trial(row.sampler_params, user_attrs={"requeued_from": row.number})
            queued += 1
        return queued


def _rdb_backend(study: optuna.Study):
    """The `RDBStorage` under a study's (cached) storage, or None for another kind."""
    storage = study._storage
    backend = getattr(storage, "_backend", storage)
    return backend if isinstance(backend, optuna.storages.RDBStorage) else None


def _write_trials(study: optuna.Study, trials: list[FrozenTrial], stored_number: dict[int, int]) -> list[int]:
    """Store finished `trials` in order, in one transaction where the storage is an RDB; returns their stored
    numbers. A ``duplicate_of`` attribute in in-memory numbering (`stored_number` maps it, or a trial earlier in
    this batch) is rewritten to stored numbering first."""
    backend = _rdb_backend(study)
    memory_of = {}
    numbers: list[int] = []

    def translate(record: FrozenTrial) -> FrozenTrial:
        original = record.user_attrs.get(Attr.DUPLICATE_OF)
        if original is not None:
            record.user_attrs[Attr.DUPLICATE_OF] = stored_number.get(original, memory_of.get(original, original))
        return record

    if backend is None:  # another storage: one by one through its API
        for record in trials:
            trial_id = study._storage.create_new_trial(study._study_id, template_trial=translate(record))
            numbers.append(study._storage.get_trial_number_from_id(trial_id))
            memory_of[record.number] = numbers[-1]
        return numbers
    from optuna.storages._rdb.storage import _create_scoped_session

    with _create_scoped_session(backend.scoped_session) as session:
        return _insert_trials(session, study._study_id, trials, translate, memory_of)


def _utc(moment):
    """A FrozenTrial's naive local datetime as the naive UTC that `RDBStorage` stores."""
    return None if moment is None else moment.astimezone(datetime.timezone.utc).replace(tzinfo=None)


def _insert_trials(session, study_id: int, trials: list[FrozenTrial], translate, memory_of: dict) -> list[int]:
    """Insert finished `trials` in Optuna's RDB schema: one INSERT a trial row, then every param, value and
    attribute row of the batch in one executemany each (Optuna's own `create_new_trial(template_trial=...)`
    issues a query and an upsert per param and attribute: ~60 statements a trial here). Returns their numbers."""
    from optuna.storages._rdb import models
    from sqlalchemy import insert

    models.StudyModel.find_or_raise_by_id(study_id, session, for_update=True)  # numbers without races
    trial_ids = [session.execute(insert(models.TrialModel.__table__).values(
        number=None, study_id=study_id, state=record.state, datetime_start=_utc(record.datetime_start),
        datetime_complete=_utc(record.datetime_complete))).inserted_primary_key[0] for record in trials]
    numbers = _number_trials(session, study_id, trial_ids)
    for record, number in zip(trials, numbers):
        memory_of[record.number] = number  # before `translate`: a duplicate of a trial earlier in this batch
    params, values, user_attrs, system_attrs, intermediate = [], [], [], [], []
    for record, trial_id in zip(trials, trial_ids):
        record = translate(record)
        for name, value in record.params.items():
            distribution = record.distributions[name]
            params.append({"trial_id": trial_id, "param_name": name,
                           "param_value": distribution.to_internal_repr(value),
                           "distribution_json": optuna.distributions.distribution_to_json(distribution)})
        for objective, value in enumerate(record.values or []):
            stored, kind = models.TrialValueModel.value_to_stored_repr(value)
            values.append({"trial_id": trial_id, "objective": objective, "value": stored, "value_type": kind})
        user_attrs += [{"trial_id": trial_id, "key": k, "value_json": json.dumps(v)}
                       for k, v in record.user_attrs.items()]
        system_attrs += [{"trial_id": trial_id, "key": k, "value_json": json.dumps(v)}
                         for k, v in record.system_attrs.items()]
        for step, value in record.intermediate_values.items():
            stored, kind = models.TrialIntermediateValueModel.intermediate_value_to_stored_repr(value)
            intermediate.append({"trial_id": trial_id, "step": step, "intermediate_value": stored,
                                 "intermediate_value_type": kind})
    for model, rows in ((models.TrialParamModel, params), (models.TrialValueModel, values),
                        (models.TrialUserAttributeModel, user_attrs),
                        (models.TrialSystemAttributeModel, system_attrs),
                        (models.TrialIntermediateValueModel, intermediate)):
        if rows:
            session.execute(insert(model.__table__), rows)
    return numbers


def _number_trials(session, study_id: int, trial_ids: list[int]) -> list[int]:
    """Give the inserted trials their study-wide numbers as Optuna does (the count of the study's trials with a
    smaller id), in two queries and one executemany; returns the numbers."""
    from optuna.storages._rdb import models
    from sqlalchemy import bindparam, func, select, update

    table = models.TrialModel.__table__
    first = min(trial_ids)
    below = session.scalar(select(func.count()).select_from(table).where(
        table.c.study_id == study_id, table.c.trial_id < first))
    span = session.scalars(select(table.c.trial_id).where(table.c.study_id == study_id, table.c.trial_id >= first)
                           .order_by(table.c.trial_id)).all()
    position = {trial_id: below + i for i, trial_id in enumerate(span)}
    numbers = [position[trial_id] for trial_id in trial_ids]
    session.execute(update(table).where(table.c.trial_id == bindparam("id_")).values(number=bindparam("number_")),
                    [{"id_": t, "number_": n} for t, n in zip(trial_ids, numbers)])
    return numbers
