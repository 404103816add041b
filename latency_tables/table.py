"""Latency of an `ArchSpec` on a target: the sum of its blocks' entries, with a per-stage breakdown and sources.

Entries come from the target's table (measured on its device); blocks without an entry are estimated
(`estimate`: fitted on the table's own entries where it has a few, else, for a GPU, calibrated on public GPU
benchmarks and moved to the target by its specs). The table only reads; on the target's own device a
`latency_tables.measurer.TableMeasurer` measures into it.
"""
from __future__ import annotations

import functools
import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from common.dtypes import DTYPES
from common.errors import UserFacingError
from latency_tables.block_costs import variant_name
from latency_tables.blocks import Block, decompose
from latency_tables.correction import MIN_CORRECTION_NETWORKS, AdditivityCorrection, activations_mb, weights_mb
from latency_tables.counting import RUNTIMES
from latency_tables.estimate import EstimationError, Estimator, calibrated_estimator, fitted_estimator
from latency_tables.measure import MeasureSettings
from latency_tables.storage import LatencyDB, Measurement, default_db_path
from latency_tables.targets import Target, get_target
from search_spaces import ArchSpec

__all__ = ["AdditivityCorrection", "BlockLatency", "StageLatency", "Prediction", "LatencyTable", "predict", "open_table",
           "block_from_key", "weights_mb", "activations_mb", "MIN_CORRECTION_NETWORKS", "SettingsError"]

CPU_ENTRY_PASSES = 3  # timings per cpu entry (`MeasureSettings.passes`); GPU timings (do_bench) are steady


class SettingsError(UserFacingError, ValueError):
    """A table setting (dtype, runtime) the project does not know."""


@dataclass(frozen=True)
class BlockLatency:
    block: Block
    latency_ms: float
    source: str  # "measured" | "estimated"


@dataclass(frozen=True)
class StageLatency:
    name: str  # "stem", "stage0", ..., "head"
    latency_ms: float
    measured_blocks: int
    estimated_blocks: int


@dataclass(frozen=True)
class Prediction:
    """``latency_ms`` of one architecture on ``target``; ``source`` says where the numbers came from."""
    latency_ms: float
    stages: tuple[StageLatency, ...]
    blocks: tuple[BlockLatency, ...]
    source: str
    target: str
    table: str  # URL of the latency table

    @property
    def measured(self) -> bool:
        return all(b.source == "measured" for b in self.blocks)

    def breakdown_ms(self) -> dict[str, float]:
        return {stage.name: stage.latency_ms for stage in self.stages}


def _stage_name(block: Block, num_stages: int) -> str:
    return "stem" if block.stage < 0 else "head" if block.stage >= num_stages else f"stage{block.stage}"


def block_from_key(block_key: str, in_shape: tuple[int, int, int]) -> Block:
    """The `Block` a stored entry measured (stage unknown: -1), from its key and input shape."""
    data = json.loads(block_key)
    role = data.pop("role")
    return Block(role, json.dumps(data, sort_keys=True, separators=(",", ":")), in_shape, stage=-1)


class LatencyTable:
    """The entries of one target at one setting (implementation, dtype, batch, resolution) in a `LatencyDB`."""

    def __init__(self, target: Target, db: LatencyDB, settings: MeasureSettings) -> None:
        self.target, self.db, self.settings = target, db, settings

    @property
    def correction_key(self) -> str:
        """The info key the additivity correction of these settings is stored under."""
        s = self.settings
        return f"additivity:{self.target.name}:{s.stored_implementation}:{s.dtype}:batch{s.batch}:res{s.resolution}"

    @property
    def torch_device(self) -> torch.device:
        """Where this table's target runs (`Target.device_type`)."""
        return torch.device(self.target.device_type)

    def forget(self) -> None:
        """Drop what was read (entries, correction, estimator): the next use reads the database again, as a
        `TableMeasurer` does after writing."""
        for name in ("_entries", "_correction_record", "_estimator"):
            self.__dict__.pop(name, None)

    # ------------------------------------------------------------------------------------------------ entries
    def entries(self) -> dict[tuple[str, tuple[int, int, int]], Measurement]:
        """Measured entries by (block key, input shape); the newest wins where devices or versions differ."""
        return self._entries

    @functools.cached_property
    def _entries(self) -> dict[tuple[str, tuple[int, int, int]], Measurement]:
        found: dict[tuple[str, tuple[int, int, int]], Measurement] = {}
        for key, measurement in self.db.entries(target=self.target.name,
                                                implementation=self.settings.stored_implementation,
                                                dtype=self.settings.dtype, batch=self.settings.batch):
            index = (key.block_key, (key.channels, key.height, key.width))
            if index not in found or found[index].measured_at < measurement.measured_at:
                found[index] = measurement
        return found

    def missing(self, blocks: list[Block]) -> list[Block]:
        """The blocks of `blocks` without an entry, each (key, input shape) once, in order."""
        entries, seen, out = self.entries(), set(), []
        for block in blocks:
            index = (block.key, block.in_shape)
            if index not in entries and index not in seen:
                seen.add(index)
                out.append(block)
        return out

    # --------------------------------------------------------------------------------------------- correction
    def correction(self) -> AdditivityCorrection | None:
        """The additivity correction fitted for this table's settings, if any (`TableMeasurer.fit_correction`)."""
        record = self._correction_record
        return None if record is None else AdditivityCorrection.from_record(record["fit"])

    @functools.cached_property
    def _correction_record(self) -> dict | None:
        """The stored correction as `TableMeasurer.store_correction` wrote it (fit, networks, samples, specs)."""
        stored = self.db.get_info(self.correction_key)
        return None if stored is None else json.loads(stored)

    def correction_inputs(self, spec: ArchSpec) -> tuple[float, float, float]:
        """``(sum of the stored entries ms, weights MB, activations MB)`` of `spec`, every block measured: what the
        additivity correction maps to a network's ms."""
        blocks, entries = decompose(spec, self.settings.resolution), self.entries()
        return (sum(entries[(b.key, b.in_shape)].median_ms for b in blocks), weights_mb(blocks, self.settings.dtype),
                activations_mb(blocks, self.settings.batch, self.settings.dtype))

    def correction_networks(self) -> list[tuple[ArchSpec, float]]:
        """The networks the stored correction was fitted on, with their measured ms; empty without a correction
        or for one stored before its networks' specs were."""
        record = self._correction_record
        if not record or not record.get("specs"):
            return []
        return [(ArchSpec.from_dict(spec), sample[3]) for spec, sample in zip(record["specs"], record["samples"],
                                                                               strict=True)]

    def require_estimable(self) -> None:
        """`EstimationError`, one line naming the command that fixes it, where this table can neither look a block
        up nor estimate it: a CPU target (no public specs) with fewer than 3 entries at these settings."""
        if self.target.is_gpu or len(self.entries()) >= 3:
            return
        s = self.settings
        flags = "".join(f" --{name} {value}" for name, value, default in (
            ("dtype", s.dtype, self.target.default_dtype), ("batch", s.batch, self.target.default_batch),
            ("runtime", s.runtime, "eager")) if value != default)
        path = self.db.sqlite_path
        shipped = path is not None and path.resolve() == default_db_path(self.target.name).resolve()
        where = "" if shipped else f" --latency-db {path or self.db.url}"
        raise EstimationError(f"the {self.target.name} table has {len(self.entries())} entries at {s.dtype}, batch "
                              f"{s.batch}, {s.runtime}, and a CPU has no public specs to estimate from: measure them "
                              f"first (python launch.py measure --target {self.target.name}{flags}{where} --archs 20)")

    # ------------------------------------------------------------------------------------------- estimation
    def estimator(self) -> Estimator:
        """What estimates this table's unmeasured blocks (`estimate`, in its order of preference)."""
        return self._estimator

    @functools.cached_property
    def _estimator(self) -> Estimator:
        s = self.settings
        if len(self.entries()) >= 3:
            measured = [(block_from_key(key, shape), m.median_ms) for (key, shape), m in sorted(self.entries().items())]
            return fitted_estimator(self.target, measured, variant_name(s.implementation, s.runtime, s.dtype), s.batch,
                                    s.dtype, s.runtime)
        return calibrated_estimator(self.target, s.implementation, s.runtime, s.batch, s.dtype)

    # --------------------------------------------------------------------------------------------- predict
    def predict(self, spec: ArchSpec) -> Prediction:
        blocks = decompose(spec, self.settings.resolution)
        entries, correction = self.entries(), self.correction()
        parts: list[BlockLatency] = []
        for block in blocks:
            measurement = entries.get((block.key, block.in_shape))
            if measurement is not None:
                latency_ms, source = measurement.median_ms, "measured"
            else:
                latency_ms = self.estimator().block_ms(block)
                source = "estimated"
            if correction is not None:  # from alone to inside a network
                latency_ms = correction.block_ms(latency_ms, weights_mb([block], self.settings.dtype),
                                                 activations_mb([block], self.settings.batch, self.settings.dtype))
            parts.append(BlockLatency(block, latency_ms, source))
        stages: dict[str, list[BlockLatency]] = {}
        for part in parts:
            stages.setdefault(_stage_name(part.block, len(spec.stages)), []).append(part)
        stage_rows = tuple(StageLatency(name, sum(p.latency_ms for p in group),
                                        sum(p.source == "measured" for p in group),
                                        sum(p.source == "estimated" for p in group)) for name, group in stages.items())
        estimated = sum(p.source == "estimated" for p in parts)
        if not estimated:
            source = f"measured ({self.target.name} table)"
        else:
            basis = self.estimator().basis
            source = (f"estimated: {basis}" if estimated == len(parts) else
                      f"measured {len(parts) - estimated}/{len(parts)} blocks, the rest estimated: {basis}")
        if correction is not None:
            source += f"; additivity-corrected on {correction.networks} networks"
        return Prediction(sum(p.latency_ms for p in parts), stage_rows, tuple(parts), source, self.target.name,
                          self.db.url)


DEFAULT_GPU_RUNTIME = "compiled"  # what a user deploying these backbones runs: see README, "GPU estimates"


def default_settings(target: Target, batch: int | None = None, resolution: int | None = None,
                     dtype: str | None = None, runtime: str | None = None) -> MeasureSettings:
    """The target's defaults (batch 1, 224x224, bf16 and the compiled runtime on GPU / fp32 eager on CPU) with any
    of them overridden."""
    dtype = dtype or target.default_dtype
    if dtype not in DTYPES:
        raise SettingsError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    runtime = runtime or (DEFAULT_GPU_RUNTIME if target.is_gpu else "eager")
    if runtime not in RUNTIMES:
        raise SettingsError(f"runtime must be one of {', '.join(RUNTIMES)}, got {runtime!r}")
    return MeasureSettings(batch=batch or target.default_batch, resolution=resolution or target.default_resolution,
                           dtype=dtype, implementation="triton" if target.kind == "gpu" else "torch", runtime=runtime,
                           threads=os.cpu_count() or 1, passes=1 if target.kind == "gpu" else CPU_ENTRY_PASSES)


_tables: dict[tuple, LatencyTable] = {}


def open_table(target: str | Target, db: str | Path | None = None, batch: int | None = None,
               resolution: int | None = None, dtype: str | None = None, create: bool = True,
               runtime: str | None = None) -> LatencyTable:
    """The (cached) `LatencyTable` of `target` in `db` (default: the table shipped in latency_tables/data).

    With ``create=False`` the table is opened read-only (`LatencyDB`): nothing is written, a missing default table
    reads as empty and a missing `db` is a `LatencyDBError`.
    """
    target = get_target(target) if isinstance(target, str) else target
    settings = default_settings(target, batch, resolution, dtype, runtime)
    url = str(db) if db is not None else str(default_db_path(target.name))
    if db is None and not create and not default_db_path(target.name).exists():
        url = "sqlite://"  # in memory: nothing measured for this target, and nothing written for a lookup
    cache_key = (target.name, url, settings.batch, settings.resolution, settings.dtype, settings.stored_implementation,
                 create)
    if cache_key not in _tables:
        _tables[cache_key] = LatencyTable(target, LatencyDB(url, read_only=not create and url != "sqlite://"),
                                          settings)
    return _tables[cache_key]


def predict(spec: ArchSpec, target: str | Target, db: str | Path | None = None, batch: int | None = None,
            resolution: int | None = None, dtype: str | None = None, runtime: str | None = None) -> Prediction:
    """Latency of `spec` on `target` in ms, with its per-stage breakdown and where each number came from."""
    return open_table(target, db, batch, resolution, dtype, create=False, runtime=runtime).predict(spec)
