"""Latency of an `ArchSpec` on a target: the sum of its blocks' entries, with a per-stage breakdown and sources.

Entries come from the target's table (measured on its device); blocks without an entry are estimated
(`estimate`: fitted on the table's own entries where it has a few, else, for a GPU, calibrated on public GPU
benchmarks and moved to the target by its specs). On the target's own device, `LatencyTable.measure_missing`
measures them instead.
"""
from __future__ import annotations

import dataclasses
import json
import os
import logging
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from common.dtypes import DTYPES
from common.errors import UserFacingError
from latency_tables.block_costs import variant_name
from latency_tables.blocks import Block, decompose
from latency_tables.correction import (MIN_CORRECTION_NETWORKS, AdditivityCorrection, activations_mb,
                                       weights_mb)
from latency_tables.counting import RUNTIMES
from latency_tables.estimate import EstimationError, Estimator, calibrated_estimator, fitted_estimator
from latency_tables.measure import (MeasureSettings, Timing, combine_passes, time_block, time_network,
                                   time_networks)
from latency_tables.storage import EntryKey, LatencyDB, Measurement, default_db_path
from latency_tables.targets import Target, current_device_string, get_target, software_versions
from search_spaces import ArchSpec

__all__ = ["AdditivityCorrection", "BlockLatency", "Drift", "StageLatency", "Prediction", "LatencyTable", "predict",
           "open_table", "weights_mb", "activations_mb", "NETWORK_PASSES", "MIN_CORRECTION_NETWORKS", "SettingsError"]

_log = logging.getLogger(__name__)
NETWORK_PASSES = 3  # timings per network: correction fit (`time_networks`), exported model cards (`measure_network`)
CPU_ENTRY_PASSES = 3  # timings per cpu entry (`MeasureSettings.passes`); GPU timings (do_bench) are steady
MEASURE_CHUNK = 48  # blocks timed pass after pass together: the passes of an entry lie ~10 s apart on a CPU


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


@dataclass(frozen=True)
class Drift:
    """A sample of a table's entries (`what` = "entries") or of its correction networks ("networks") timed again
    now: per item now / stored, its median and 20th/80th percentiles. ``ratio`` > 1: this machine runs slower now
    than when the table was measured."""
    what: str
    timed: int
    ratio: float
    p20: float
    p80: float


def _drift(what: str, ratios: list[float]) -> Drift:
    p20, median, p80 = np.quantile(ratios, [0.2, 0.5, 0.8])
    return Drift(what, len(ratios), float(median), float(p20), float(p80))


def _stage_name(block: Block, num_stages: int) -> str:
    return "stem" if block.stage < 0 else "head" if block.stage >= num_stages else f"stage{block.stage}"


def _block_from_key(block_key: str, in_shape: tuple[int, int, int]) -> Block:
    data = json.loads(block_key)
    role = data.pop("role")
    return Block(role, json.dumps(data, sort_keys=True, separators=(",", ":")), in_shape, stage=-1)


class LatencyTable:
    """The entries of one target at one setting (implementation, dtype, batch, resolution) in a `LatencyDB`."""

    def __init__(self, target: Target, db: LatencyDB, settings: MeasureSettings) -> None:
        self.target, self.db, self.settings = target, db, settings
        self._entries: dict[tuple[str, tuple[int, int, int]], Measurement] | None = None
        self._estimator: Estimator | None = None
        self._correction: AdditivityCorrection | None | bool = False  # False: not loaded yet

    @property
    def _correction_key(self) -> str:
        s = self.settings
        return f"additivity:{self.target.name}:{s.stored_implementation}:{s.dtype}:batch{s.batch}:res{s.resolution}"

    def correction(self) -> AdditivityCorrection | None:
        """The additivity correction fitted for this table's settings, if any (`fit_correction`)."""
        if self._correction is False:
            record = self._correction_record()
            self._correction = None if record is None else AdditivityCorrection.from_record(record["fit"])
        return self._correction

    def _correction_record(self) -> dict | None:
        """The stored correction as `store_correction` wrote it (fit, networks, samples, specs), if any."""
        stored = self.db.get_info(self._correction_key)
        return None if stored is None else json.loads(stored)

    def correction_inputs(self, spec: ArchSpec) -> tuple[float, float, float]:
        """``(sum of the stored entries ms, weights MB, activations MB)`` of `spec`, every block measured: what the
        additivity correction maps to a network's ms."""
        blocks, entries = decompose(spec, self.settings.resolution), self.entries()
        return (sum(entries[(b.key, b.in_shape)].median_ms for b in blocks), weights_mb(blocks, self.settings.dtype),
                activations_mb(blocks, self.settings.batch, self.settings.dtype))

    def fit_correction(self, specs: list[ArchSpec], progress: bool = True,
                       passes: int = NETWORK_PASSES) -> AdditivityCorrection:
        """Measure `specs` end to end on this machine in `passes` passes (their missing blocks first), fit and
        store the correction."""
        self.measure_missing([b for spec in specs for b in decompose(spec, self.settings.resolution)], progress)
        current_device_string(self.target)
        with tqdm(total=len(specs) * passes, desc=f"measuring {self.target.name} networks", unit="net",
                  disable=not progress) as bar:
            measured = time_networks(specs, self.settings, self.torch_device, passes, lambda *_: bar.update())
        return self.store_correction(specs, measured)

    def store_correction(self, specs: list[ArchSpec], network_ms: list[float]) -> AdditivityCorrection:
        """Fit the correction on `specs` measured end to end at `network_ms` (ms each, on this machine, every block
        already in the table) and store it."""
        samples = [(*self.correction_inputs(spec), measured_ms) for spec, measured_ms in zip(specs, network_ms,
                                                                                              strict=True)]
        fit = AdditivityCorrection.fit(samples)
        record = {"fit": dataclasses.asdict(fit), "networks": [s.digest() for s in specs], "samples": samples,
                  "specs": [s.to_dict() for s in specs], "device": current_device_string(self.target)}
        self.db.set_info(self._correction_key, json.dumps(record))
        self._correction = fit
        return fit

    def measure_network(self, spec: ArchSpec, passes: int = 1) -> Timing:
        """Time `spec` end to end on this machine with the table's settings, `passes` times in a row, combined by
        `combine_passes` (`TargetUnavailableError` if this machine is not the target)."""
        current_device_string(self.target)
        if passes < 1:
            raise ValueError(f"passes must be >= 1, got {passes}")
        return combine_passes([time_network(spec, self.settings, self.torch_device) for _ in range(passes)])

    @property
    def torch_device(self) -> torch.device:
        """Where this table's target runs (`Target.device_type`)."""
        return torch.device(self.target.device_type)

    def drift(self, sample: int = 24, seed: int = 0) -> Drift:
        """Time `sample` random entries again on this machine and compare with their stored times: a table
        measured when the machine ran at another speed (a shared VM, another clock) predicts that far off."""
        current_device_string(self.target)
        items = sorted(self.entries().items())
        if not items:
            raise EstimationError(f"the {self.target.name} table has no entries to check")
        random.Random(seed).shuffle(items)
        device = self.torch_device
        ratios = [time_block(_block_from_key(key, shape), self.settings, device).median_ms / m.median_ms
                  for (key, shape), m in items[:sample]]
        return _drift("entries", ratios)

    def network_drift(self, sample: int = 8, seed: int = 0) -> Drift | None:
        """Time `sample` of the networks the additivity correction was fitted on again, each once, and compare with
        the times it was fitted to; None without a correction that stored its networks (older ones did not).

        Blocks timed alone and networks need not drift together (on the 2-core VM, within one hour: blocks 1.20x,
        networks 1.30x), and a prediction is `scale` x the blocks plus per-MB costs fitted on networks: a network
        drift off 1 means the correction no longer fits, whatever `drift` says of the entries."""
        pairs = self.correction_networks()
        if not pairs:
            return None
        current_device_string(self.target)
        random.Random(seed).shuffle(pairs)
        device = self.torch_device
        ratios = [time_network(spec, self.settings, device).median_ms / network_ms for spec, network_ms in
                  pairs[:sample]]
        return _drift("networks", ratios)

    def correction_networks(self) -> list[tuple[ArchSpec, float]]:
        """The networks the stored correction was fitted on, with their measured ms; empty without a correction
        or for one stored before its networks' specs were."""
        record = self._correction_record()
        if not record or not record.get("specs"):
            return []
        return [(ArchSpec.from_dict(spec), sample[3]) for spec, sample in zip(record["specs"], record["samples"],
                                                                               strict=True)]

    # ------------------------------------------------------------------------------------------------ entries
    def entries(self) -> dict[tuple[str, tuple[int, int, int]], Measurement]:
        """Measured entries by (block key, input shape); the newest wins where devices or versions differ."""
        if self._entries is None:
            found: dict[tuple[str, tuple[int, int, int]], Measurement] = {}
            for key, measurement in self.db.entries(target=self.target.name,
                                                    implementation=self.settings.stored_implementation,
                                                    dtype=self.settings.dtype, batch=self.settings.batch):
                index = (key.block_key, (key.channels, key.height, key.width))
                if index not in found or found[index].measured_at < measurement.measured_at:
                    found[index] = measurement
            self._entries = found
        return self._entries

    def _entry_key(self, block: Block, device: str) -> EntryKey:
        versions = software_versions()
        return EntryKey(target=self.target.name, device=device, implementation=self.settings.stored_implementation,
                        dtype=self.settings.dtype, batch=self.settings.batch, block_key=block.key,
                        channels=block.in_shape[0], height=block.in_shape[1], width=block.in_shape[2],
                        torch_version=versions["torch"], triton_version=versions["triton"],
                        cuda_version=versions["cuda"])

    def missing(self, blocks: list[Block]) -> list[Block]:
        entries, seen, out = self.entries(), set(), []
        for block in blocks:
            index = (block.key, block.in_shape)
            if index not in entries and index not in seen:
                seen.add(index)
                out.append(block)
        return out

    def measure_missing(self, blocks: list[Block], progress: bool = True) -> int:
        """Measure on this machine every block of `blocks` without an entry; returns the number measured.

        With ``settings.passes`` > 1 the blocks are timed chunk by chunk, each chunk `passes` times over, and an
        entry is the median of its passes (a shared CPU changes speed over seconds: benchmarks/timing_noise.py).
        The blocks are measured in a shuffled (seeded) order: a machine that changes speed over the minutes of a
        measurement then spreads that over every network's blocks, instead of making the blocks listed last (one
        network's, one stage's) all slower or faster. Each entry is committed after its last pass, so an
        interrupted run keeps what it finished."""
        return self._measure(self.missing(blocks), progress)

    def remeasure(self, progress: bool = True) -> int:
        """Time every stored entry again on this machine (as `measure_missing` times new ones), replacing it, and
        refit the additivity correction on its own networks where one is stored; returns the entries timed. A
        read-only table is reopened for writing (`LatencyDBError` where its file cannot be written)."""
        if self.db.read_only:
            read_only_db, self.db = self.db, LatencyDB(self.db.writable_url)
            read_only_db.close()
        items = sorted(self.entries())
        timed = self._measure([_block_from_key(key, shape) for key, shape in items], progress)
        networks = [spec for spec, _ in self.correction_networks()]
        if networks:
            self.fit_correction(networks, progress)
        return timed

    def _measure(self, todo: list[Block], progress: bool) -> int:
        device_string = current_device_string(self.target)  # raises if this machine is not the target
        self.db.claim_device(self.target.name, device_string)
        todo, passes = list(todo), self.settings.passes
        random.Random(0).shuffle(todo)
        with tqdm(total=len(todo) * passes, desc=f"measuring {self.target.name} blocks", unit="timing",
                  disable=not progress) as bar:
            for start in range(0, len(todo), MEASURE_CHUNK):
                chunk = todo[start:start + MEASURE_CHUNK]
                timings: list[list[Timing]] = [[] for _ in chunk]
                for pass_index in range(passes):
                    for block, block_timings in zip(chunk, timings):
                        block_timings.append(time_block(block, self.settings, self.torch_device))
                        bar.update()
                        if pass_index == passes - 1:
                            self._store(block, combine_passes(block_timings), device_string)
        if todo:
            self._estimator = None  # refit with the new entries
        return len(todo)

    def _store(self, block: Block, timing: Timing, device_string: str) -> None:
        threads = self.settings.threads if self.torch_device.type == "cpu" else 0
        measurement = Measurement(median_ms=timing.median_ms, p20_ms=timing.p20_ms, p80_ms=timing.p80_ms,
                                  repeats=timing.repeats, threads=threads, settings=self.settings.to_dict())
        self.db.put(self._entry_key(block, device_string), measurement)
        self.entries()[(block.key, block.in_shape)] = measurement

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
        if self._estimator is None:
            s = self.settings
            if len(self.entries()) >= 3:
                measured = [(_block_from_key(key, shape), m.median_ms) for (key, shape), m in sorted(
                    self.entries().items())]
                self._estimator = fitted_estimator(self.target, measured, variant_name(
                    s.implementation, s.runtime, s.dtype), s.batch, s.dtype, s.runtime)
            else:
                self._estimator = calibrated_estimator(self.target, s.implementation, s.runtime, s.batch, s.dtype)
        return self._estimator

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
