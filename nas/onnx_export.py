"""ONNX for deployment: an exported backbone as ``model.onnx``, checked with onnxruntime against PyTorch.

The network is exported as deployed (eval mode, BatchNorm folded: `search_spaces.fold_batchnorm`) on the
reference path of its mixers (PyTorch operators; the Triton kernels are CUDA-only), with torch's ONNX exporter
(``torch.onnx.export(dynamo=True)``), opset `OPSET`, a dynamic batch dimension and a fixed resolution. The check
runs the file in onnxruntime (CPU) and the PyTorch model on the same images, at a batch other than the one
exported with, so that the batch really is dynamic; a file that disagrees by more than `TOLERANCE` is not kept.
"""
from __future__ import annotations

import contextlib
import io
import statistics
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

__all__ = ["OPSET", "TOLERANCE", "OnnxResult", "export_onnx", "onnxruntime_ms"]

OPSET = 18
TOLERANCE = 1e-3  # max |onnxruntime - PyTorch| over the logits; fp32 reorderings measure ~1e-6 (tests/nas)
_EXPORT_BATCH, _CHECK_BATCH = 2, 3
_MAX_BATCH = 4096


@dataclass(frozen=True)
class OnnxResult:
    """What `export_onnx` wrote: ``path`` (None where no file was kept), the check's ``max_abs_diff`` over the
    logits, and ``error``, one line, where the model could not be exported or its check failed."""
    path: Path | None
    opset: int
    max_abs_diff: float | None = None
    error: str | None = None

    def to_dict(self) -> dict:
        return {"file": self.path.name if self.path else None, "opset": self.opset,
                "max_abs_diff": self.max_abs_diff, "error": self.error}


def export_onnx(model: nn.Module, resolution: int, path: Path, seed: int = 0) -> OnnxResult:
    """Write `model` (eval mode, on the CPU) to `path` as ONNX with inputs ``images`` float32 ``[batch, 3, R, R]``
    (R = `resolution`) and outputs ``logits`` (or the features-only outputs), then check it with onnxruntime.

    Never raises for a model the exporter or onnxruntime cannot handle: the reason is in ``error`` and no file is
    left at `path`.
    """
    import onnxruntime

    path = Path(path)
    model = model.eval()
    generator = torch.Generator().manual_seed(seed)
    example = torch.randn(_EXPORT_BATCH, 3, resolution, resolution, generator=generator)
    images = torch.randn(_CHECK_BATCH, 3, resolution, resolution, generator=generator)
    try:
        with _quiet():
            torch.onnx.export(model, (example,), str(path), input_names=["images"], output_names=["logits"],
                              dynamic_shapes=({0: torch.export.Dim("batch", min=1, max=_MAX_BATCH)},),
                              opset_version=OPSET, dynamo=True, external_data=False, verbose=False)
        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        (got,) = session.run(["logits"], {"images": images.numpy()})
    except Exception as error:  # the exporter's and onnxruntime's failures are many kinds; each is one line here
        path.unlink(missing_ok=True)
        return OnnxResult(None, OPSET, error=f"not exportable to ONNX: {type(error).__name__}: {_first_line(error)}")
    with torch.no_grad():
        expected = model(images)
    if isinstance(expected, (list, tuple)):
        expected = expected[0]
    diff = float((torch.from_numpy(got) - expected).abs().max())
    if not diff <= TOLERANCE:
        path.unlink(missing_ok=True)
        return OnnxResult(None, OPSET, diff, f"onnxruntime's output differs from PyTorch's by {diff:.3g} "
                          f"(> {TOLERANCE:g}): not kept")
    return OnnxResult(path, OPSET, diff)


def onnxruntime_ms(path: Path, batch: int, resolution: int, min_seconds: float = 0.3, min_repeats: int = 10
                   ) -> float:
    """Median milliseconds of one onnxruntime CPU run of `path` on ``[batch, 3, R, R]`` images, after a warm-up,
    over at least `min_repeats` runs and `min_seconds` (as the latency tables time a CPU block)."""
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feed = {"images": torch.randn(batch, 3, resolution, resolution).numpy()}
    for _ in range(3):
        session.run(None, feed)
    times: list[float] = []
    started = time.perf_counter()
    while len(times) < min_repeats or time.perf_counter() - started < min_seconds:
        tick = time.perf_counter()
        session.run(None, feed)
        times.append((time.perf_counter() - tick) * 1e3)
    return statistics.median(times)


@contextlib.contextmanager
def _quiet():
    """The exporter prints its progress and warns about its own internals: none of it is the program's output."""
    sink = io.StringIO()
    with warnings.catch_warnings(), contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
        warnings.simplefilter("ignore")
        yield


def _first_line(error: BaseException) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return (lines[0] if lines else "no message")[:300]
