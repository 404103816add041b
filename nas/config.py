"""What a search is asked to do (`SearchConfig`), parsed and checked before any work starts.

A config names the latency target and budget, how many trials, which sampler and proxy, where the data are and
where the study and exports go. Defaults that depend on other fields (study name, output folder, storage URL,
proxy) are resolved by `SearchConfig.resolved()`, so the same command always lands on the same study: rerunning it
resumes that study.
"""
from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from common.errors import UserFacingError
from latency_tables.targets import local_cores
from search_spaces import MAX_RESOLUTION, MIN_RESOLUTION  # spec constants: no torch import (--help stays quick)

if TYPE_CHECKING:
    from search_spaces import SearchSpace

__all__ = [
    "ConfigError", "SearchConfig", "SAMPLERS", "PRUNERS", "OBJECTIVES", "parse_latency_ms", "format_ms", "default_out",
    "default_storage", "default_study_file", "DEFAULT_PROXY_WITH_DATA", "DEFAULT_PROXY_DATA_FREE", "auto_sampler",
    "AUTO_TPE_MAX_TRIALS",
]

SAMPLERS = ("auto", "tpe", "nsga2", "random", "gp")
# `--sampler auto` (the default) is TPE up to this many trials and NSGA-II beyond: TPE finds the better front per
# trial, but its ask grows with the history (benchmarks/results/sampler-efficiency.json, README "Samplers").
AUTO_TPE_MAX_TRIALS = 1000
PRUNERS = ("median", "none")  # nas.pruning.make_pruner
# "best": one objective, the proxy (maximised), the budget as a constraint.
# "pareto": two objectives, proxy (maximised) and latency_ms (minimised), the budget as a constraint.
OBJECTIVES = ("best", "pareto")
# Chosen from benchmarks/results/proxy-quality.json (Spearman with trained accuracy on the CIFAR-scale space);
# tests/nas/test_config.py checks that they are still what that benchmark picks.
DEFAULT_PROXY_WITH_DATA = "ranker"
DEFAULT_PROXY_DATA_FREE = "flops"
RUNS_FOLDER = Path("runs")

_LATENCY = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*(ms|us|µs)\s*$", re.IGNORECASE)
_STUDY_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


class ConfigError(UserFacingError, ValueError):
    """A search setting is invalid; the message is one line a user can act on."""


def auto_sampler(trials: int) -> str:
    """The sampler ``--sampler auto`` runs for a study of `trials`."""
    return "tpe" if trials <= AUTO_TPE_MAX_TRIALS else "nsga2"


def parse_latency_ms(text: str) -> float:
    """``"5ms"`` -> 5.0, ``"5.5ms"`` -> 5.5, ``"800us"`` -> 0.8 (milliseconds); anything else is a `ConfigError`."""
    match = _LATENCY.match(text) if isinstance(text, str) else None
    if match is None:
        raise ConfigError(f"budget {text!r} is not a latency: write a number and a unit, e.g. 5ms, 5.5ms or 800us")
    value = float(match.group(1))
    latency_ms = value if match.group(2).lower() == "ms" else value / 1000.0
    if not math.isfinite(latency_ms) or latency_ms <= 0:
        raise ConfigError(f"budget {text!r} must be a positive latency")
    return latency_ms


def format_ms(latency_ms: float) -> str:
    """A budget as a short name part: 5.0 -> ``5ms``, 5.5 -> ``5.5ms``, 0.8 -> ``800us``."""
    value, unit = (latency_ms * 1000, "us") if latency_ms < 1 else (latency_ms, "ms")
    text = f"{value:.6f}".rstrip("0").rstrip(".")  # never exponent notation: 1e6 -> 1000000ms
    return f"{text}{unit}"


def default_out(study: str) -> Path:
    """Where a study's files go unless ``--out`` says otherwise: ``runs/<study>``."""
    return RUNS_FOLDER / study


def default_study_file(out: Path) -> Path:
    """The sqlite file of the default storage in output folder `out`."""
    return out / "study.db"


def default_storage(out: Path) -> str:
    """The study's storage unless ``--storage`` says otherwise: a sqlite file in the output folder."""
    return f"sqlite:///{default_study_file(out).resolve()}"


@dataclass(frozen=True)
class SearchConfig:
    """A search, as ``python launch.py --target a100 --budget 5ms ...`` asks for it.

    Attributes:
        target: latency target name (``latency_tables.TARGETS``).
        budget_ms: latency budget per image batch, milliseconds.
        trials: total trials the study should have; a resumed study runs only the missing ones.
        timeout_s: stop asking for new trials after this many seconds (running ones finish); None: no limit.
        workers: evaluations kept in flight (Ray tasks of one CPU each).
        ray_address: address of a running Ray cluster; None starts a local Ray just for this search.
        sampler: one of `SAMPLERS`; ``auto``: `auto_sampler` of `trials`.
        objective: one of `OBJECTIVES`; None: ``pareto`` for nsga2, else ``best``.
        proxy: accuracy proxy name (``nas.proxies.PROXIES``); None: the benchmark's pick for the data given.
        data: images for the data proxies (``nas.data.load_data``); None: data-free proxies only.
        batch, resolution, dtype, runtime: latency-table settings; None: the target's defaults (runtime: compiled
            on GPUs, eager on the CPU).
        proxy_resolution: input size of the proxies; None: the data's image size (at least 64), or `resolution`
            without data.
        latency_db: SQLAlchemy URL or path of the latency table; None: the shipped table.
        study: study name; None: ``<target>-<budget>-<sampler>-<proxy>``.
        storage: Optuna storage URL; None: ``sqlite:///<out>/study.db``.
        out: output folder (summary.json, exports/); None: ``runs/<study>``.
        space: the search space: a name of ``search_spaces.SPACES`` (``default``, ``cifar``), the path of a JSON
            file declaring one (``search_spaces.load_space``), or a `SearchSpace`.
        seed: sampler seed and proxy seed.
        top_k: Pareto architectures to export besides the best one.
        export: export the winners at the end (``launch.py export`` can do it later).
        onnx: each export also gets ``model.onnx``, checked with onnxruntime (`nas.onnx_export`).
        train_steps: steps of the ``short_train`` proxy.
        pruner: one of ``nas.pruning.PRUNERS``: stops ``short_train`` evaluations whose intermediate accuracy
            falls behind earlier trials' (single objective only).
        remeasure: a CPU table that does not fit this machine now (``latency_tables.freshness``) is timed again
            here before the search, instead of stopping it.
        accept_stale_table: search on such a table anyway, labelled stale in the summary and the model cards.
    """
    target: str
    budget_ms: float
    trials: int = 100
    timeout_s: float | None = None
    workers: int = 2
    ray_address: str | None = None
    sampler: str = "auto"
    objective: str | None = None
    proxy: str | None = None
    data: Path | None = None
    batch: int | None = None
    resolution: int | None = None
    dtype: str | None = None
    runtime: str | None = None
    proxy_resolution: int | None = None
    latency_db: str | None = None
    study: str | None = None
    storage: str | None = None
    out: Path | None = None
    space: str | SearchSpace = "default"
    seed: int = 0
    top_k: int = 5
    export: bool = True
    onnx: bool = True
    train_steps: int = 300
    pruner: str = "median"
    remeasure: bool = False
    accept_stale_table: bool = False

    def __post_init__(self) -> None:
        if not (isinstance(self.budget_ms, (int, float)) and math.isfinite(self.budget_ms) and self.budget_ms > 0):
            raise ConfigError(f"budget must be a positive number of milliseconds, got {self.budget_ms!r}")
        for name in ("trials", "workers", "train_steps"):
            if getattr(self, name) < 1:
                raise ConfigError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}")
        cores = local_cores()
        if self.ray_address is None and self.workers > cores:
            raise ConfigError(f"--workers {self.workers}: each local evaluation is a process on one core and this "
                              f"machine has {cores}; use at most {cores}, or --ray-address for a cluster")
        if self.top_k < 0:
            raise ConfigError(f"--top must be 0 or more, got {self.top_k}")
        if self.timeout_s is not None and not self.timeout_s > 0:
            raise ConfigError(f"--timeout must be a positive number of seconds, got {self.timeout_s}")
        if self.sampler not in SAMPLERS:
            raise ConfigError(f"unknown sampler {self.sampler!r}; choose one of {', '.join(SAMPLERS)}")
        if self.pruner not in PRUNERS:
            raise ConfigError(f"unknown pruner {self.pruner!r}; choose one of {', '.join(PRUNERS)}")
        if self.objective is not None and self.objective not in OBJECTIVES:
            raise ConfigError(f"unknown objective {self.objective!r}; choose one of {', '.join(OBJECTIVES)}")
        if self.study is not None and not _STUDY_NAME.match(self.study):
            raise ConfigError(f"study name {self.study!r} must be 1-100 letters, digits, '.', '_' or '-', "
                              f"starting with a letter or digit")
        if self.batch is not None and self.batch < 1:
            raise ConfigError(f"--batch must be a positive integer, got {self.batch}")
        for name in ("resolution", "proxy_resolution"):
            value = getattr(self, name)
            if value is not None and not MIN_RESOLUTION <= value <= MAX_RESOLUTION:
                raise ConfigError(f"--{name.replace('_', '-')} must be {MIN_RESOLUTION}-{MAX_RESOLUTION} pixels, "
                                  f"got {value}")

    def resolved(self) -> SearchConfig:
        """This config with every None default that other fields decide filled in (objective, proxy, study,
        out, storage)."""
        objective = self.objective or ("pareto" if self.sampler == "nsga2" else "best")  # auto: best
        sampler = auto_sampler(self.trials) if self.sampler == "auto" else self.sampler
        proxy = self.proxy or (DEFAULT_PROXY_WITH_DATA if self.data is not None else DEFAULT_PROXY_DATA_FREE)
        # named by the sampler asked for (auto too), so rerunning with more --trials resumes the same study
        study = self.study or f"{self.target}-{format_ms(self.budget_ms)}-{self.sampler}-{proxy}"
        out = self.out if self.out is not None else default_out(study)
        storage = self.storage or default_storage(out)
        return dataclasses.replace(self, sampler=sampler, objective=objective, proxy=proxy, study=study, out=out,
                                   storage=storage)
