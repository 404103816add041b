"""The Optuna study of a search: creation and resumption, samplers, and reading trials back as `TrialRecord`s.

A study stores, besides Optuna's own data, what it was created for (study user attributes ``target``,
``budget_ms``, ``proxy``, ``objective``, latency-table settings...), so a resume with other settings is refused
and an export can describe the search without its command line. Every trial stores its architecture, latency
(with breakdown and source), budget, params, FLOPs and proxy score as user attributes: the dashboard shows them.
"""
from __future__ import annotations

import logging
import math
import time
import warnings
from dataclasses import dataclass
from typing import Any

import optuna
from sqlalchemy import event
from sqlalchemy.exc import DatabaseError, IntegrityError
from optuna.exceptions import ExperimentalWarning
from optuna.trial import FrozenTrial, TrialState

from nas.config import ConfigError, SearchConfig
from search_spaces import ArchSpec

__all__ = [
    "StudyError", "TrialRecord", "STUDY_KEYS", "make_sampler", "open_study", "load_study", "records",
    "best_record", "pareto_records", "StudyMirror", "metric_names",
]

_log = logging.getLogger(__name__)

# Opening a new database creates Optuna's schema; another process (the dashboard, a second search) creating it at
# the same moment makes one of them fail on a duplicate row or table. The loser retries and finds the schema made.
_SCHEMA_RACE_RETRIES = 5
_FINISHED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
# Study user attributes that must match when a study is resumed.
STUDY_KEYS = ("target", "budget_ms", "objective", "proxy", "batch", "resolution", "dtype", "proxy_resolution")
NSGA2_POPULATION = 24  # small enough that 100 trials make four generations


class StudyError(RuntimeError):
    """A study cannot be created, resumed or read; the message says which study and why."""


def make_sampler(name: str, seed: int, objective: str) -> optuna.samplers.BaseSampler:
    """The Optuna sampler called `name`. The budget reaches every one of them as a trial constraint
    (``trial.set_constraint``): TPE and NSGA-II rank infeasible trials below feasible ones."""
    warnings.filterwarnings("ignore", category=ExperimentalWarning, module="optuna")  # group=, set_metric_names
    if name == "tpe":
        # constant_liar: trials still running count as bad, so parallel workers do not all get the same proposal.
        return optuna.samplers.TPESampler(seed=seed, multivariate=True, group=True, constant_liar=True,
                                          n_startup_trials=10)
    if name == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed, population_size=NSGA2_POPULATION)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if name == "gp":
        return optuna.samplers.GPSampler(seed=seed, n_startup_trials=10)
    raise ConfigError(f"unknown sampler {name!r}")


def metric_names(config: SearchConfig) -> list[str]:
    """Objective names for the dashboard: the proxy, and latency in ms for Pareto searches."""
    names = [f"proxy_{config.proxy}"]
    return names + ["latency_ms"] if config.objective == "pareto" else names


def _storage(url: str) -> optuna.storages.BaseStorage:
    engine_kwargs: dict[str, Any] = {}
    if url.startswith("sqlite"):
        engine_kwargs["connect_args"] = {"timeout": 60}  # wait for the dashboard's reads instead of failing
    for attempt in range(_SCHEMA_RACE_RETRIES + 1):
        try:
            storage = optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs)
            break
        except Exception as error:  # SQLAlchemy raises many kinds for bad URLs and unreachable databases
            if attempt == _SCHEMA_RACE_RETRIES or not _schema_race(error):
                raise StudyError(f"cannot open storage {url}: {str(error).splitlines()[0]}") from None
            time.sleep(0.05 * (attempt + 1))
    if url.startswith("sqlite"):
        # WAL: the dashboard reads while the search writes; synchronous=NORMAL: a commit without an fsync (a
        # power cut may lose the last trials, never corrupt the file)
        event.listen(storage.engine, "connect", _sqlite_pragmas)
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


def _sqlite_pragmas(connection, record) -> None:
    cursor = connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def open_study(config: SearchConfig, study_attrs: dict[str, Any]) -> tuple[optuna.Study, bool]:
    """Create the study of a resolved `config`, or resume it; returns ``(study, resumed)``.

    Raises:
        StudyError: the storage cannot be opened, or the stored study was made with different settings.
    """
    storage = _storage(config.storage)
    directions = ["maximize", "minimize"] if config.objective == "pareto" else ["maximize"]
    sampler = optuna.samplers.RandomSampler()  # never asked: `StudyMirror` samples on its in-memory copy
    resumed = config.study in optuna.get_all_study_names(storage)
    if resumed:
        study = optuna.load_study(study_name=config.study, storage=storage, sampler=sampler)
        stored = study.user_attrs
        for key in STUDY_KEYS:
            if key in stored and stored[key] != study_attrs.get(key):
                raise StudyError(f"study {config.study!r} was made with {key}={stored[key]!r}, not "
                                 f"{study_attrs.get(key)!r}; use the same settings or another --study")
        if [d.name.lower() for d in study.directions] != directions:
            raise StudyError(f"study {config.study!r} has objectives {len(study.directions)}, this search "
                             f"{len(directions)}; use the same --sampler/--objective or another --study")
        return study, True
    study = optuna.create_study(study_name=config.study, storage=storage, sampler=sampler, directions=directions)
    for key, value in study_attrs.items():
        study.set_user_attr(key, value)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ExperimentalWarning)
        study.set_metric_names(metric_names(config))
    return study, False


def load_study(name: str, storage_url: str) -> optuna.Study:
    """A stored study, to export or show; `StudyError` listing the stored names if there is no such study."""
    storage = _storage(storage_url)
    names = optuna.get_all_study_names(storage)
    if name not in names:
        known = ", ".join(names) if names else "none"
        raise StudyError(f"no study {name!r} in {storage_url}; studies there: {known}")
    return optuna.load_study(study_name=name, storage=storage)


class StudyMirror:
    """The sampler's working copy of a stored study.

    Ask, sampling and tell run on an in-memory study; each finished trial is then written to the storage in one
    transaction (`finish`). Done directly on the storage, one trial of this space is ~50 transactions (ask, ~30
    suggests, the attributes, the constraint, the tell) and the search loop costs ~100 ms a trial on sqlite; this
    way a trial is one. The storage holds finished trials only: the dashboard shows each one as it finishes, and
    a search that dies loses only its in-flight evaluations. One driver per study.
    """

    def __init__(self, stored: optuna.Study, sampler: optuna.samplers.BaseSampler,
                 pruner: optuna.pruners.BasePruner | None = None) -> None:
        self.stored = stored
        self.memory = optuna.create_study(storage=optuna.storages.InMemoryStorage(), sampler=sampler,
                                          pruner=pruner or optuna.pruners.NopPruner(), directions=stored.directions)
        self.stored_number: dict[int, int] = {}  # in-memory trial number -> stored trial number
        for trial in stored.get_trials(deepcopy=False, states=_FINISHED):
            self.memory.add_trial(trial)
            self.stored_number[len(self.stored_number)] = trial.number

    def ask(self) -> optuna.Trial:
        return self.memory.ask()

    def finish(self, trial: optuna.Trial, values: list[float] | None = None,
               state: TrialState = TrialState.COMPLETE) -> int:
        """Tell `trial` (``values`` for COMPLETE), store it; returns its number in the stored study."""
        self.memory.tell(trial, values, state=state)
        frozen = self.memory._storage.get_trial(trial._trial_id)
        storage = self.stored._storage
        trial_id = storage.create_new_trial(self.stored._study_id, template_trial=frozen)
        number = storage.get_trial_number_from_id(trial_id)
        self.stored_number[trial.number] = number
        return number

    def requeue(self, rows: list[TrialRecord]) -> int:
        """Queue the architectures that an interrupt cut short and no later trial evaluated; returns how many."""
        evaluated = {r.spec.digest() for r in rows if r.spec is not None and (
            r.state == "COMPLETE" or r.user_attrs.get("fail_kind") in ("evaluation", "worker_lost"))}
        queued = 0
        for row in rows:
            if row.user_attrs.get("fail_kind") != "interrupted" or row.spec is None:
                continue
            if row.spec.digest() in evaluated:
                continue
            evaluated.add(row.spec.digest())
            self.memory.enqueue_trial(row.sampler_params, user_attrs={"requeued_from": row.number})
            queued += 1
        return queued


@dataclass(frozen=True)
class TrialRecord:
    """What a search knows of one trial, read back from the storage."""
    number: int
    state: str  # "COMPLETE" | "PRUNED" | "FAIL" | "RUNNING" | "WAITING"
    spec: ArchSpec | None
    latency_ms: float | None
    proxy: float | None
    feasible: bool  # evaluated, and within the budget
    params: int | None
    flops: int | None
    latency_source: str | None
    breakdown_ms: dict
    reason: str | None  # why a trial failed or was pruned
    duplicate_of: int | None
    user_attrs: dict
    sampler_params: dict  # the Optuna parameters `sample_arch` read (``params`` is the parameter count)

    @property
    def stopped_by_pruner(self) -> bool:
        """PRUNED because the pruner stopped its training (the other PRUNED trials were over the budget)."""
        return self.state == "PRUNED" and "pruned_at_step" in self.user_attrs


def _record(trial: FrozenTrial, budget_ms: float) -> TrialRecord:
    attrs = trial.user_attrs
    spec = ArchSpec.from_json(attrs["arch"]) if "arch" in attrs else None
    latency_ms = attrs.get("latency_ms")
    proxy = trial.values[0] if trial.state == TrialState.COMPLETE and trial.values else None
    feasible = (proxy is not None and math.isfinite(proxy) and latency_ms is not None and latency_ms <= budget_ms)
    return TrialRecord(number=trial.number, state=trial.state.name, spec=spec, latency_ms=latency_ms, proxy=proxy,
                       feasible=feasible, params=attrs.get("params"), flops=attrs.get("flops"),
                       latency_source=attrs.get("latency_source"), breakdown_ms=attrs.get("latency_breakdown_ms", {}),
                       reason=attrs.get("fail_reason") or attrs.get("prune_reason"),
                       duplicate_of=attrs.get("duplicate_of"), user_attrs=dict(attrs),
                       sampler_params=dict(trial.params))


def records(study: optuna.Study) -> list[TrialRecord]:
    """Every trial of `study` as a `TrialRecord`, by trial number."""
    budget_ms = float(study.user_attrs.get("budget_ms", math.inf))
    return [_record(trial, budget_ms) for trial in study.get_trials(deepcopy=False)]


def _distinct_feasible(rows: list[TrialRecord]) -> list[TrialRecord]:
    return [r for r in rows if r.feasible and r.duplicate_of is None]


def best_record(rows: list[TrialRecord]) -> TrialRecord | None:
    """The feasible trial with the highest proxy (the faster one on ties); None if none is feasible."""
    feasible = _distinct_feasible(rows)
    return max(feasible, key=lambda r: (r.proxy, -r.latency_ms, -r.number)) if feasible else None


def pareto_records(rows: list[TrialRecord]) -> list[TrialRecord]:
    """Feasible trials no other feasible trial beats on both proxy (higher) and latency (lower), fastest first."""
    front: list[TrialRecord] = []
    for row in sorted(_distinct_feasible(rows), key=lambda r: (r.latency_ms, -r.proxy, r.number)):
        if not front or row.proxy > front[-1].proxy:
            front.append(row)
    return front
