"""Fitting a `Calibration` (the GPU model's efficiencies) on measured forwards, and the calibrations on disk.

A sample is one measured forward: its `CostProfile`, batch, measured ms and the GPU's public rates. `fit` finds
the efficiencies that make `gpu_model.profile_seconds` closest to the measurements in log space, with a soft-L1
loss (a model the counter gets wrong, or a benchmark row that caught a slow moment, pulls less than a square
would let it). The per-kernel dispatch bound is left out of the fit: at the benchmarks' batch sizes (8 to 1024
images) the GPU time dwarfs it.

Files: the calibration fitted on the public timm benchmarks ships as ``data/gpu-calibration.json`` (one entry per
runtime, with provenance and held-out errors); ``launch.py calibrate --benchmarks my-gpu.csv --target NAME``
writes ``data/calibration-<target>.json``, fitted on that GPU alone, which then wins for that target. Both are
written whole or not at all.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from common.errors import UserFacingError
from common.files import write_json_atomic
from latency_tables.counting import COMPUTE_CLASSES, OP_CLASSES
from latency_tables.gpu_model import Calibration, GpuRates, profile_seconds
from latency_tables.profile import CostProfile

__all__ = ["Sample", "fit", "fit_errors", "prediction_errors", "shipped_calibration_path", "target_calibration_path",
           "load_calibrations", "store_calibrations", "CalibrationError"]

DATA = Path(__file__).resolve().parent / "data"  # read at call time (tests point it elsewhere)
LOSS_SCALE = 0.1  # soft-L1 on log(predicted / measured): quadratic within ~10%, linear beyond
START = {"compute": 0.5, "bandwidth": 0.7, "kernel_flops": 1.0}
KERNEL_FLOPS_UNIT = 1e8  # kernel_flops is fitted in this unit, so every log parameter starts near 0
LOG_BOUNDS = (-30.0, 30.0)  # a parameter the data do not support (a per-kernel cost of ~0) stays finite, > 0


class CalibrationError(UserFacingError, ValueError):
    """A calibration cannot be fitted or read; the message says why in one line."""


@dataclass(frozen=True)
class Sample:
    """One measured forward: `profile` at `batch` took `measured_ms` on a GPU of `rates`."""
    profile: CostProfile
    batch: int
    measured_ms: float
    rates: GpuRates
    label: str = ""  # e.g. the timm model name


def _stack(samples: list[Sample]) -> dict[str, torch.Tensor]:
    """The samples' kernels as flat tensors (one row per compute kernel, with its sample's index)."""
    classes, flops, moved, owner, peaks, bandwidths = [], [], [], [], [], []
    memory = np.zeros((len(samples), len(OP_CLASSES)))
    for index, sample in enumerate(samples):
        c, f, b = sample.profile.arrays(sample.batch)
        classes.append(c)
        flops.append(f)
        moved.append(b)
        owner.append(np.full(len(c), index))
        peaks.append(sample.rates.peak_flops[c])
        bandwidths.append(np.full(len(c), sample.rates.bandwidth_bytes_per_s))
        for op_class, value in sample.profile.memory_bytes(sample.batch).items():
            memory[index, OP_CLASSES.index(op_class)] = value
    as_tensor = lambda parts, dtype=torch.float64: torch.as_tensor(np.concatenate(parts), dtype=dtype)  # noqa: E731
    return {"classes": as_tensor(classes, torch.long), "flops": as_tensor(flops), "bytes": as_tensor(moved),
            "owner": as_tensor(owner, torch.long), "peak": as_tensor(peaks), "kernel_bw": as_tensor(bandwidths),
            "memory": torch.as_tensor(memory), "bw": torch.tensor([s.rates.bandwidth_bytes_per_s for s in samples],
                                                                  dtype=torch.float64),
            "kernels": torch.tensor([s.profile.kernels for s in samples], dtype=torch.float64),
            "fp32": torch.tensor([s.rates.fp32_flops for s in samples], dtype=torch.float64),
            "measured_s": torch.tensor([s.measured_ms * 1e-3 for s in samples], dtype=torch.float64)}


_COMPUTE_INDEX = [OP_CLASSES.index(c) for c in COMPUTE_CLASSES]


def _seconds(log_params: torch.Tensor, data: dict[str, torch.Tensor]) -> torch.Tensor:
    """`profile_seconds` (without the dispatch bound) of every sample, differentiable in the log parameters:
    ``[compute efficiency per COMPUTE_CLASSES, bandwidth efficiency per OP_CLASSES, kernel_flops]``."""
    params = torch.exp(log_params)
    compute = torch.ones(len(OP_CLASSES), dtype=torch.float64).index_put((torch.tensor(_COMPUTE_INDEX),),
                                                                        params[:len(COMPUTE_CLASSES)])
    bandwidth = params[len(COMPUTE_CLASSES):len(COMPUTE_CLASSES) + len(OP_CLASSES)]
    classes = data["classes"]
    per_kernel = torch.maximum(data["flops"] / (compute[classes] * data["peak"]),
                               data["bytes"] / (bandwidth[classes] * data["kernel_bw"]))
    seconds = torch.zeros(len(data["measured_s"]), dtype=torch.float64).index_add_(0, data["owner"], per_kernel)
    seconds = seconds + (data["memory"] / (bandwidth[None, :] * data["bw"][:, None])).sum(1)
    return seconds + data["kernels"] * params[-1] * KERNEL_FLOPS_UNIT / data["fp32"]


_FULL = len(COMPUTE_CLASSES) + len(OP_CLASSES) + 1  # compute and bandwidth efficiencies, kernel_flops
# tied: one compute efficiency, one bandwidth efficiency, one per-kernel cost (a table's own few entries)
_TIED = torch.tensor([0] * len(COMPUTE_CLASSES) + [1] * len(OP_CLASSES) + [2])


def fit(samples: list[Sample], runtime: str, fitted_on: str, tied: bool = False,
        iterations: int = 300) -> Calibration:
    """The calibration of `runtime` that best explains `samples` (soft-L1 on the log ratio); `tied`: one
    efficiency for all compute classes and one for all bandwidths (3 parameters instead of 11)."""
    mapping = _TIED if tied else torch.arange(_FULL)
    free = int(mapping.max()) + 1
    needed = 3 if tied else 2 * free
    if len(samples) < needed:
        raise CalibrationError(f"need at least {needed} measured forwards to fit a calibration, got {len(samples)}")
    data = _stack(samples)
    compute0, bandwidth0, kernel0 = (math.log(START[key]) for key in ("compute", "bandwidth", "kernel_flops"))
    initial = ([compute0, bandwidth0, kernel0] if tied else
               [compute0] * len(COMPUTE_CLASSES) + [bandwidth0] * len(OP_CLASSES) + [kernel0])
    log_measured = torch.log(data["measured_s"])
    for learning_rate in (1.0, 0.1):  # LBFGS's full steps can overshoot into overflow: retry with shorter ones
        log_params = torch.tensor(initial, dtype=torch.float64, requires_grad=True)
        optimizer = torch.optim.LBFGS([log_params], lr=learning_rate, max_iter=iterations,
                                      line_search_fn="strong_wolfe")

        def closure() -> torch.Tensor:
            optimizer.zero_grad()
            ratio = (torch.log(_seconds(log_params[mapping].clamp(*LOG_BOUNDS), data)) - log_measured) / LOSS_SCALE
            loss = (torch.sqrt(1 + ratio ** 2) - 1).mean()
            loss.backward()
            return loss

        optimizer.step(closure)
        if torch.isfinite(log_params).all():
            break
    else:
        raise CalibrationError(f"the fit on {len(samples)} measured forwards diverged")
    params = torch.exp(log_params.detach()[mapping].clamp(*LOG_BOUNDS)).tolist()
    compute = dict(zip(COMPUTE_CLASSES, params[:len(COMPUTE_CLASSES)]))
    bandwidth = dict(zip(OP_CLASSES, params[len(COMPUTE_CLASSES):-1]))
    return Calibration(runtime=runtime, compute=compute, bandwidth=bandwidth,
                       kernel_flops=params[-1] * KERNEL_FLOPS_UNIT, fitted_on=fitted_on, fit={"models": len(samples)})


def fit_errors(calibration: Calibration, samples: list[Sample]) -> dict:
    """How far `calibration` predicts `samples` (`prediction_errors`)."""
    predicted = [profile_seconds(s.profile, s.batch, s.rates, calibration) * 1e3 for s in samples]
    return prediction_errors(predicted, [s.measured_ms for s in samples])


def prediction_errors(predicted_ms: list[float], measured_ms: list[float]) -> dict:
    """Shares within ±10/15/25%, median |error|, median signed error, Spearman of predicted against measured."""
    predicted, measured = np.array(predicted_ms, dtype=float), np.array(measured_ms, dtype=float)
    error = predicted / measured - 1
    absolute = np.abs(error)
    ranks = lambda values: np.argsort(np.argsort(values))  # noqa: E731
    return {"models": len(predicted), "within_10": float(np.mean(absolute <= 0.10)),
            "within_15": float(np.mean(absolute <= 0.15)), "within_25": float(np.mean(absolute <= 0.25)),
            "median_abs_error": float(np.median(absolute)), "median_signed_error": float(np.median(error)),
            "spearman": float(np.corrcoef(ranks(predicted), ranks(measured))[0, 1]) if len(predicted) > 2 else 0.0}


def shipped_calibration_path() -> Path:
    """The calibration fitted on the public timm benchmarks (``benchmarks/gpu_estimate.py --write-calibration``)."""
    return DATA / "gpu-calibration.json"


def target_calibration_path(target: str) -> Path:
    """Where ``launch.py calibrate`` keeps the calibration fitted on `target`'s own measurements."""
    return DATA / f"calibration-{target}.json"


def load_calibrations(path: Path) -> dict[str, Calibration]:
    """The calibrations (by runtime) in `path`; `CalibrationError` for a missing or damaged file."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        return {runtime: Calibration.from_dict(entry) for runtime, entry in data["runtimes"].items()}
    except OSError as error:
        raise CalibrationError(f"cannot read calibration {path}: {error.strerror or error}") from None
    except (ValueError, KeyError, TypeError, AttributeError) as error:
        raise CalibrationError(f"calibration {path} is damaged ({type(error).__name__}: {error})") from None


def store_calibrations(path: Path, calibrations: dict[str, Calibration], provenance: dict) -> None:
    """Write `calibrations` (by runtime) with their `provenance` to `path`, whole or not at all."""
    write_json_atomic(path, {"provenance": provenance,
                             "runtimes": {runtime: c.to_dict() for runtime, c in calibrations.items()}})
