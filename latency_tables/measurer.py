"""`TableMeasurer`: fills a `LatencyTable` on its target's own device, checked once when it is made.

It times missing blocks (and every stored one again, `remeasure`), fits and stores the additivity correction on
networks timed end to end, times a network for a model card, and times a sample of stored entries or correction
networks again to see how far this machine now is from the table (`drift`, `network_drift`). The table itself
only reads (`latency_tables.table`).
"""
from __future__ import annotations

import dataclasses
import json
import random
from dataclasses import dataclass

import numpy as np
from tqdm import tqdm

from latency_tables.blocks import Block, decompose
from latency_tables.correction import AdditivityCorrection
from latency_tables.estimate import EstimationError
from latency_tables.measure import Timing, combine_passes, time_block, time_network, time_networks
from latency_tables.storage import EntryKey, LatencyDB, Measurement
from latency_tables.table import LatencyTable, block_from_key
from latency_tables.targets import current_device_string, software_versions
from search_spaces import ArchSpec

__all__ = ["Drift", "TableMeasurer", "NETWORK_PASSES", "MEASURE_CHUNK"]

NETWORK_PASSES = 3  # timings per network: correction fit (`time_networks`), exported model cards (`measure_network`)
MEASURE_CHUNK = 48  # blocks timed pass after pass together: the passes of an entry lie ~10 s apart on a CPU


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

    @classmethod
    def of(cls, what: str, ratios: list[float]) -> Drift:
        p20, median, p80 = np.quantile(ratios, [0.2, 0.5, 0.8])
        return cls(what, len(ratios), float(median), float(p20), float(p80))


class TableMeasurer:
    """Measures into `table` on this machine; `TargetUnavailableError` at construction if this machine is not the
    table's target (the one device check)."""

    def __init__(self, table: LatencyTable) -> None:
        self.table = table
        self.device_string = current_device_string(table.target)
        self.device = table.torch_device

    @property
    def settings(self):
        return self.table.settings

    # ------------------------------------------------------------------------------------------------ entries
    def measure_missing(self, blocks: list[Block], progress: bool = True) -> int:
        """Measure on this machine every block of `blocks` without an entry; returns the number measured.

        With ``settings.passes`` > 1 the blocks are timed chunk by chunk, each chunk `passes` times over, and an
        entry is the median of its passes (a shared CPU changes speed over seconds: benchmarks/timing_noise.py).
        The blocks are measured in a shuffled (seeded) order: a machine that changes speed over the minutes of a
        measurement then spreads that over every network's blocks, instead of making the blocks listed last (one
        network's, one stage's) all slower or faster. Each entry is committed after its last pass, so an
        interrupted run keeps what it finished."""
        return self._measure(self.table.missing(blocks), progress)

    def remeasure(self, progress: bool = True) -> int:
        """Time every stored entry again on this machine (as `measure_missing` times new ones), replacing it, and
        refit the additivity correction on its own networks where one is stored; returns the entries timed. A
        read-only table is reopened for writing (`LatencyDBError` where its file cannot be written)."""
        table = self.table
        if table.db.read_only:
            read_only_db, table.db = table.db, LatencyDB(table.db.writable_url)
            read_only_db.close()
        timed = self._measure([block_from_key(key, shape) for key, shape in sorted(table.entries())], progress)
        networks = [spec for spec, _ in table.correction_networks()]
        if networks:
            self.fit_correction(networks, progress)
        return timed

    def _measure(self, todo: list[Block], progress: bool) -> int:
        self.table.db.claim_device(self.table.target.name, self.device_string)
        todo, passes = list(todo), self.settings.passes
        random.Random(0).shuffle(todo)
        try:
            with tqdm(total=len(todo) * passes, desc=f"measuring {self.table.target.name} blocks", unit="timing",
                      disable=not progress) as bar:
                for start in range(0, len(todo), MEASURE_CHUNK):
                    chunk = todo[start:start + MEASURE_CHUNK]
                    timings: list[list[Timing]] = [[] for _ in chunk]
                    for pass_index in range(passes):
                        for block, block_timings in zip(chunk, timings):
                            block_timings.append(time_block(block, self.settings, self.device))
                            bar.update()
                            if pass_index == passes - 1:
                                self._store(block, combine_passes(block_timings))
        finally:
            if todo:
                self.table.forget()  # entries and their estimator re-read with what was stored
        return len(todo)

    def entry_key(self, block: Block) -> EntryKey:
        """The key `block` is stored under when measured here, with this machine's device and software versions."""
        s, versions = self.settings, software_versions()
        return EntryKey(target=self.table.target.name, device=self.device_string, implementation=s.stored_implementation,
                        dtype=s.dtype, batch=s.batch, block_key=block.key, channels=block.in_shape[0],
                        height=block.in_shape[1], width=block.in_shape[2], torch_version=versions["torch"],
                        triton_version=versions["triton"], cuda_version=versions["cuda"])

    def _store(self, block: Block, timing: Timing) -> None:
        s = self.settings
        measurement = Measurement(median_ms=timing.median_ms, p20_ms=timing.p20_ms, p80_ms=timing.p80_ms,
                                  repeats=timing.repeats, threads=s.threads if self.device.type == "cpu" else 0,
                                  settings=s.to_dict())
        self.table.db.put(self.entry_key(block), measurement)

    # --------------------------------------------------------------------------------------------- networks
    def fit_correction(self, specs: list[ArchSpec], progress: bool = True,
                       passes: int = NETWORK_PASSES) -> AdditivityCorrection:
        """Measure `specs` end to end on this machine in `passes` passes (their missing blocks first), fit and
        store the correction."""
        self.measure_missing([b for spec in specs for b in decompose(spec, self.settings.resolution)], progress)
        with tqdm(total=len(specs) * passes, desc=f"measuring {self.table.target.name} networks", unit="net",
                  disable=not progress) as bar:
            measured = time_networks(specs, self.settings, self.device, passes, lambda *_: bar.update())
        return self.store_correction(specs, measured)

    def store_correction(self, specs: list[ArchSpec], network_ms: list[float]) -> AdditivityCorrection:
        """Fit the correction on `specs` measured end to end at `network_ms` (ms each, on this machine, every block
        already in the table) and store it."""
        table = self.table
        samples = [(*table.correction_inputs(spec), measured_ms) for spec, measured_ms in zip(specs, network_ms,
                                                                                               strict=True)]
        fit = AdditivityCorrection.fit(samples)
        record = {"fit": dataclasses.asdict(fit), "networks": [s.digest() for s in specs], "samples": samples,
                  "specs": [s.to_dict() for s in specs], "device": self.device_string}
        table.db.set_info(table.correction_key, json.dumps(record))
        table.forget()
        return fit

    def measure_network(self, spec: ArchSpec, passes: int = 1) -> Timing:
        """Time `spec` end to end on this machine with the table's settings, `passes` times in a row, combined by
        `combine_passes`."""
        if passes < 1:
            raise ValueError(f"passes must be >= 1, got {passes}")
        return combine_passes([time_network(spec, self.settings, self.device) for _ in range(passes)])

    # ------------------------------------------------------------------------------------------------ drift
    def drift(self, sample: int = 24, seed: int = 0) -> Drift:
        """Time `sample` random entries again on this machine and compare with their stored times: a table
        measured when the machine ran at another speed (a shared VM, another clock) predicts that far off."""
        items = sorted(self.table.entries().items())
        if not items:
            raise EstimationError(f"the {self.table.target.name} table has no entries to check")
        random.Random(seed).shuffle(items)
        return Drift.of("entries", [time_block(block_from_key(key, shape), self.settings, self.device).median_ms
                                    / m.median_ms for (key, shape), m in items[:sample]])

    def network_drift(self, sample: int = 8, seed: int = 0) -> Drift | None:
        """Time `sample` of the networks the additivity correction was fitted on again, each once, and compare with
        the times it was fitted to; None without a correction that stored its networks (older ones did not).

        Blocks timed alone and networks need not drift together (on the 2-core VM, within one hour: blocks 1.20x,
        networks 1.30x), and a prediction is `scale` x the blocks plus per-MB costs fitted on networks: a network
        drift off 1 means the correction no longer fits, whatever `drift` says of the entries."""
        pairs = self.table.correction_networks()
        if not pairs:
            return None
        random.Random(seed).shuffle(pairs)
        return Drift.of("networks", [time_network(spec, self.settings, self.device).median_ms / network_ms
                                     for spec, network_ms in pairs[:sample]])
