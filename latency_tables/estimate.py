"""Estimates of the blocks a table has not measured: the kernel model of `gpu_model`, and where it stands.

A block's kernels (`block_costs`: counted on the meta device as its target runs it) each take ``max(compute,
memory)`` at the rates of an `Estimator`, plus a per-kernel cost. What the rates and efficiencies stand on, in
the order a table takes them (`LatencyTable.estimator`):

1. the table's own measured entries (three or more): one compute rate, one bandwidth and one per-kernel cost
   fitted on them (the CPU target has no public specs: this is its only estimate);
2. for a GPU, the calibration ``launch.py calibrate`` fitted on that GPU's own timm benchmark CSV;
3. for a GPU, the shipped calibration (``data/gpu-calibration.json``: per-class efficiencies fitted on timm's
   public GPU benchmarks), moved to the target by its public specs (peak FLOP/s, bandwidth).

Every estimate names its runtime and basis in `Estimator.basis`, which ends up in `Prediction.source`.
"""
from __future__ import annotations

import logging
import random
from dataclasses import dataclass, field

import numpy as np

from common.errors import UserFacingError
from latency_tables.block_costs import block_costs, profile_for, variant_name
from latency_tables.blocks import Block
from latency_tables.calibration import (
    CalibrationError, Sample, fit, load_calibrations, shipped_calibration_path, target_calibration_path,
)
from latency_tables.counting import OP_CLASSES
from latency_tables.gpu_model import Calibration, GpuRates, gpu_rates, profile_seconds
from latency_tables.targets import Target

__all__ = ["EstimationError", "Estimator", "fitted_estimator", "calibrated_estimator", "CALIBRATION_SAMPLE"]

_log = logging.getLogger(__name__)
CALIBRATION_SAMPLE = 150  # measured entries a table fits its own estimator on
# From this many entries the fit has one efficiency per op class (11 numbers): on the cpu table, 150 entries
# predicting 300 others, median |error| 12-14% against 19-20% tied (benchmarks/latency_estimator.py).
PER_CLASS_MIN_ENTRIES = 100
# Nominal rates of a target without public specs (the CPU): its fitted efficiencies scale these.
NOMINAL_RATES = GpuRates(np.full(len(OP_CLASSES), 1e11), 1e10, 1e11)


class EstimationError(UserFacingError, ValueError):
    """No estimate can be made (e.g. a CPU target without measured entries to fit on)."""


@dataclass(frozen=True)
class Estimator:
    """Latency of unmeasured blocks: `calibration` at `rates`, blocks counted as `variant`, at `batch`, never below
    a block's kernels x `dispatch_us`. `basis` says what it stands on."""
    calibration: Calibration
    rates: GpuRates
    variant: str
    batch: int
    dispatch_us: float
    basis: str
    _cache: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    def block_ms(self, block: Block) -> float:
        """Estimated ms of `block` (computed once per block: a search asks for the same blocks again and again)."""
        cached = self._cache.get(block)
        if cached is None:
            profiles, _, _ = block_costs(block, self.variant)
            profile = profile_for(profiles, self.batch)
            cached = self._cache[block] = 1e3 * profile_seconds(profile, self.batch, self.rates, self.calibration,
                                                                self.dispatch_us)
        return cached


def _rates(target: Target, dtype: str) -> GpuRates:
    return gpu_rates(target, dtype) if target.is_gpu else NOMINAL_RATES


def fitted_estimator(target: Target, measured: list[tuple[Block, float]], variant: str, batch: int,
                     dtype: str, runtime: str, per_class: bool | None = None) -> Estimator:
    """An estimator fitted on a table's own ``(block, measured ms)`` entries (a random `CALIBRATION_SAMPLE`): one
    efficiency per op class from `PER_CLASS_MIN_ENTRIES` entries up, three tied numbers below that (`per_class`
    forces one or the other)."""
    if len(measured) < 3:
        raise EstimationError(f"need at least 3 measured entries of {target.name} to fit an estimate, got "
                              f"{len(measured)}")
    sample = list(measured)
    random.Random(0).shuffle(sample)
    rates = _rates(target, dtype)
    samples = [Sample(profile_for(block_costs(block, variant)[0], batch), batch, ms, rates)
               for block, ms in sample[:CALIBRATION_SAMPLE]]
    tied = len(samples) < PER_CLASS_MIN_ENTRIES if per_class is None else not per_class
    calibration = fit(samples, runtime, f"{len(samples)} measured {target.name} entries", tied=tied)
    return Estimator(calibration, rates, variant, batch, 0.0,
                     f"{runtime} runtime, fitted on {len(samples)} measured {target.name} entries")


def calibrated_estimator(target: Target, implementation: str, runtime: str, batch: int, dtype: str) -> Estimator:
    """A GPU target's estimator from its own calibration file if ``launch.py calibrate`` wrote one, else from the
    shipped calibration moved to it by its specs."""
    if not target.is_gpu:
        raise EstimationError("the cpu target has no public specs: measure some entries first "
                              "(python launch.py measure --target cpu)")
    own = target_calibration_path(target.name)
    path, moved = (own, False) if own.exists() else (shipped_calibration_path(), True)
    try:
        calibrations = load_calibrations(path)
    except CalibrationError as error:
        raise EstimationError(str(error)) from None
    if runtime not in calibrations:
        raise EstimationError(f"{path} holds no calibration of the {runtime} runtime (it has "
                              f"{', '.join(calibrations) or 'none'})")
    calibration = calibrations[runtime]
    try:
        rates = gpu_rates(target, dtype)
    except ValueError as error:
        raise EstimationError(str(error)) from None
    basis = f"{runtime} runtime, calibrated on {calibration.fitted_on}"
    if moved:
        basis += f", transferred to {target.name} by its specs"
    return Estimator(calibration, rates, variant_name(implementation, runtime, dtype), batch,
                     target.dispatch_us[runtime], basis)
