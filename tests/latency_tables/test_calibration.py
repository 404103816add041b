"""Fitting the GPU model's efficiencies, and calibration files."""
from __future__ import annotations

import json
import random

import numpy as np
import pytest

from latency_tables.calibration import (
    CalibrationError, Sample, fit, fit_errors, load_calibrations, store_calibrations,
)
from latency_tables.counting import COMPUTE_CLASSES, OP_CLASSES
from latency_tables.gpu_model import Calibration, gpu_rates, profile_seconds
from latency_tables.profile import CostProfile
from latency_tables.targets import get_target

TRUTH = Calibration("eager", compute={"gemm": 0.7, "conv": 0.55, "dwconv": 0.2, "attention": 0.45},
                    bandwidth={"gemm": 0.6, "conv": 0.5, "dwconv": 0.4, "attention": 0.8, "norm": 0.65,
                               "elementwise": 0.85}, kernel_flops=1e8, fitted_on="synthetic")


def _profile(rng: random.Random) -> CostProfile:
    compute = []
    for _ in range(rng.randint(3, 12)):
        op_class = rng.choice(COMPUTE_CLASSES)
        flops, moved = 10 ** rng.uniform(5, 9), 10 ** rng.uniform(4, 7)
        compute.append((op_class, flops, flops * rng.uniform(0.5, 1.0), moved, moved * rng.uniform(0.3, 1.0)))
    memory = [(c, rng.randint(1, 20), 10 ** rng.uniform(4, 6), 10 ** rng.uniform(4, 6)) for c in ("norm",
                                                                                               "elementwise")]
    return CostProfile(tuple(compute), tuple(memory))


def _samples(target: str, count: int, seed: int) -> list[Sample]:
    rng, rates = random.Random(seed), gpu_rates(get_target(target), "fp16")
    samples = []
    for _ in range(count):
        profile, batch = _profile(rng), rng.choice((8, 64, 256, 1024))
        samples.append(Sample(profile, batch, 1e3 * profile_seconds(profile, batch, rates, TRUTH), rates))
    return samples


def test_fit_recovers_known_efficiencies_and_predicts_another_gpu_by_its_specs() -> None:
    fitted = fit(_samples("rtx3090", 300, seed=0), "eager", "synthetic 3090")
    held_out = fit_errors(fitted, _samples("rtx4090", 200, seed=1))
    assert held_out["within_10"] > 0.97 and held_out["median_abs_error"] < 0.02 and held_out["spearman"] > 0.99
    assert fitted.kernel_flops == pytest.approx(1e8, rel=0.2)
    assert fitted.fitted_on == "synthetic 3090" and fitted.fit["models"] == 300


def test_tied_fit_has_one_compute_and_one_bandwidth_efficiency() -> None:
    samples = _samples("rtx4090", 40, seed=2)
    tied = fit(samples, "eager", "tied", tied=True)
    assert len(set(tied.compute.values())) == 1 and len(set(tied.bandwidth.values())) == 1
    with pytest.raises(CalibrationError, match="at least 3"):
        fit(samples[:2], "eager", "tied", tied=True)
    with pytest.raises(CalibrationError, match="at least 22"):
        fit(samples[:21], "eager", "full")


def test_calibration_files_round_trip_and_damage_is_one_line(tmp_path) -> None:
    path = tmp_path / "calibration.json"
    store_calibrations(path, {"eager": TRUTH}, {"files": ["x.csv"]})
    assert load_calibrations(path) == {"eager": TRUTH}
    assert json.loads(path.read_text())["provenance"] == {"files": ["x.csv"]}
    assert not list(tmp_path.glob(".calibration*"))  # written whole, no temporary left
    path.write_text("{\"runtimes\": {\"eager\": {\"runtime\": \"eager\"}}}")
    with pytest.raises(CalibrationError, match="is damaged"):
        load_calibrations(path)
    with pytest.raises(CalibrationError, match="cannot read"):
        load_calibrations(tmp_path / "missing.json")


def test_a_calibration_refuses_missing_or_non_positive_efficiencies() -> None:
    with pytest.raises(ValueError, match="compute efficiencies"):
        Calibration("eager", {"gemm": 0.5}, dict.fromkeys(OP_CLASSES, 0.5), 1.0, "x")
    with pytest.raises(ValueError, match="positive"):
        Calibration("eager", dict.fromkeys(COMPUTE_CLASSES, 0.5), {**dict.fromkeys(OP_CLASSES, 0.5), "norm": 0.0},
                    1.0, "x")
    with pytest.raises(ValueError, match="runtime"):
        Calibration("jit", dict.fromkeys(COMPUTE_CLASSES, 0.5), dict.fromkeys(OP_CLASSES, 0.5), 1.0, "x")


def test_the_dispatch_bound_floors_a_small_forward() -> None:
    rates = gpu_rates(get_target("a100"), "bf16")
    tiny = CostProfile((("gemm", 1e3, 0.0, 1e3, 0.0),), (("elementwise", 9, 1e3, 0.0),))
    assert profile_seconds(tiny, 1, rates, TRUTH, dispatch_us=8.0) == pytest.approx(10 * 8e-6)
    big = CostProfile((("gemm", 1e13, 0.0, 1e9, 0.0),), ())
    seconds = profile_seconds(big, 1, rates, TRUTH, dispatch_us=8.0)
    assert seconds == pytest.approx(1e13 / (0.7 * 312e12) + 1e8 / 19.5e12) and np.isfinite(seconds)
