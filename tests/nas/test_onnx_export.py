"""nas.onnx_export: each mixer's network as ONNX, checked with onnxruntime; failures are one line, no file."""
from __future__ import annotations

import numpy as np
import onnxruntime
import torch
from torch import nn

from nas.onnx_export import TOLERANCE, export_onnx, onnxruntime_ms
from search_spaces import (
    MIXERS, TINY_ARCHS, ArchSpec, ConvMixer, DownsampleSpec, HeadSpec, LinearMixer, QnAMixer, SingleHeadMixer,
    StageSpec, StemSpec, StripMixer, WindowMixer, build_model, fold_batchnorm,
)


# One network with every mixer and every transition (one export: the exporter's own start costs seconds)
EVERY_MIXER = ArchSpec(stem=StemSpec(4, 32, "conv"), head=HeadSpec(7), stages=(
    StageSpec(ConvMixer(3, "repvit"), 32, 1),
    StageSpec(WindowMixer(2, 4), 32, 2),  # shifted windows on the second block
    StageSpec(LinearMixer(2, True, 4), 32, 2, downsample=DownsampleSpec("shvit")),  # window / linear alternate
    StageSpec(SingleHeadMixer(8, 16), 32, 1, downsample=DownsampleSpec("none")),
    StageSpec(StripMixer(2, 2), 32, 1, downsample=DownsampleSpec("qna", 2)),
    StageSpec(QnAMixer(2, 3, 2), 32, 1, downsample=DownsampleSpec("conv2x2")),
))


def test_every_mixer_exports_with_a_dynamic_batch_and_matches_pytorch(tmp_path) -> None:
    assert {stage.mixer.kind for stage in EVERY_MIXER.stages} == {
        kind for kind, entry in MIXERS.items() if entry.module == "search_spaces.spec"}  # the six built-in ones
    torch.manual_seed(0)
    model = fold_batchnorm(build_model(EVERY_MIXER))
    result = export_onnx(model, 40, tmp_path / "model.onnx")  # 40 px: stages at 10, 10, 5, 5, 3 and 2 a side
    assert result.error is None and result.path == tmp_path / "model.onnx" and result.max_abs_diff < 1e-4
    session = onnxruntime.InferenceSession(str(result.path), providers=["CPUExecutionProvider"])
    images = torch.randn(5, 3, 40, 40)
    (logits,) = session.run(["logits"], {"images": images.numpy()})
    with torch.no_grad():
        np.testing.assert_allclose(logits, model(images).numpy(), atol=1e-4)
    assert logits.shape == (5, 7)


_calls = [0]  # outside the module: the exporter traces a copy of it


class _CountsItsCalls(nn.Module):
    """Its output grows by 1 with each call: the file freezes the count the exporter saw, so it disagrees later."""
    def forward(self, x):
        _calls[0] += 1
        return x.mean(dim=(1, 2, 3))[:, None] + _calls[0]


def test_a_file_that_disagrees_with_pytorch_is_not_kept(tmp_path) -> None:
    result = export_onnx(_CountsItsCalls(), 16, tmp_path / "model.onnx")
    assert result.path is None and not (tmp_path / "model.onnx").exists()
    assert result.max_abs_diff > TOLERANCE and "differs from PyTorch's by" in result.error


def test_a_model_the_exporter_cannot_trace_is_one_line_and_no_file(tmp_path) -> None:
    class DataDependent(nn.Module):
        def forward(self, x):
            return x[:, :1, 0, 0] if float(x.sum()) > 0 else x[:, :1, 0, 0] * 2  # a branch on a value

    result = export_onnx(DataDependent(), 16, tmp_path / "model.onnx")
    assert result.path is None and not (tmp_path / "model.onnx").exists()
    assert result.error.startswith("not exportable to ONNX: ") and "\n" not in result.error


def test_onnxruntime_ms_is_a_positive_median(tmp_path) -> None:
    result = export_onnx(fold_batchnorm(build_model(TINY_ARCHS["tiny_conv"], num_classes=3)), 32,
                         tmp_path / "model.onnx")
    assert onnxruntime_ms(result.path, batch=2, resolution=32, min_seconds=0.0, min_repeats=3) > 0
