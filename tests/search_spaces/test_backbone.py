"""The backbone builder: timm conventions, registry, features_only, and the reference architectures."""
from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from search_spaces import MODEL_PREFIX, REFERENCE_ARCHS, TINY_ARCHS, build_model, count_params, register_arch
from search_spaces._compat import import_timm

timm = import_timm()


@pytest.mark.parametrize("name", sorted(REFERENCE_ARCHS))
def test_reference_arch_runs_224(name: str) -> None:
    torch.manual_seed(0)
    model = build_model(REFERENCE_ARCHS[name]).eval()
    with torch.inference_mode():
        logits = model(torch.randn(1, 3, 224, 224))
    assert logits.shape == (1, 1000) and torch.isfinite(logits).all()


@pytest.mark.parametrize("name", sorted(TINY_ARCHS))
def test_tiny_arch_through_timm_features_only(name: str) -> None:
    spec = TINY_ARCHS[name]
    model = timm.create_model(MODEL_PREFIX + name, features_only=True, out_indices=(0, 2))
    features = model(torch.randn(2, 3, 32, 32))
    assert model.feature_info.channels() == [spec.stages[0].width, spec.stages[2].width]
    assert [f.shape[1] for f in features] == model.feature_info.channels()
    assert model.feature_info.reduction() == [spec.reductions[0], spec.reductions[2]]
    assert [tuple(f.shape[-2:]) for f in features] == [spec.stage_resolutions(32, 32)[i] for i in (0, 2)]


def test_timm_conventions() -> None:
    model = timm.create_model(MODEL_PREFIX + "tiny_window", num_classes=7)
    x = torch.randn(2, 3, 32, 32)
    features = model.forward_features(x)
    assert features.shape == (2, 96, 2, 2)  # three stages, widths 32/64/96, stride 4*2*2
    assert model.forward_head(features, pre_logits=True).shape == (2, model.num_features)
    assert model(x).shape == (2, 7) and model.num_classes == 7
    assert model.get_classifier().out_features == 7
    model.reset_classifier(3)
    assert model(x).shape == (2, 3) and model.num_classes == 3
    model.reset_classifier(0)
    assert model(x).shape == (2, 96)
    assert model.pretrained_cfg["classifier"] == "head.fc"


def test_every_reference_arch_is_registered_with_timm() -> None:
    names = set(timm.list_models(MODEL_PREFIX + "*"))
    assert {MODEL_PREFIX + n for n in {**REFERENCE_ARCHS, **TINY_ARCHS}} <= names


def test_register_arch_makes_create_model_work() -> None:
    spec = TINY_ARCHS["tiny_qna"]
    register_arch("hnas_test_registered_qna", spec, resolution=32)
    model = timm.create_model("hnas_test_registered_qna", num_classes=4)
    assert count_params(model) == count_params(build_model(spec, num_classes=4))
    assert model(torch.randn(1, 3, 32, 32)).shape == (1, 4)
    with pytest.raises(ValueError, match="must be a Python identifier"):
        register_arch("bad-name", spec)


def test_compat_import_works_in_a_fresh_interpreter() -> None:
    code = ("from search_spaces._compat import import_timm; t = import_timm(); import torchvision; "
            "print(t.create_model('resnet18', num_classes=3).fc.out_features)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().endswith("3")


@pytest.mark.parametrize("name", ["tiny_window", "tiny_linear", "tiny_single_head", "tiny_strip"])
def test_whole_network_on_triton_kernels_matches_reference(name: str, monkeypatch) -> None:
    import importlib
    calls = []
    for op in ("window_attention", "linear_attention", "single_head_attention", "strip_attention"):
        module = importlib.import_module(f"kernels.{op}.triton_kernel")
        original = getattr(module, f"{op}_triton")
        monkeypatch.setattr(module, f"{op}_triton",
                            lambda *args, _op=op, _fn=original: calls.append(_op) or _fn(*args))
    torch.manual_seed(0)
    model = build_model(TINY_ARCHS[name]).eval()
    x = torch.randn(1, 3, 32, 32)
    with torch.inference_mode():
        monkeypatch.setenv("HYBRID_NAS_KERNELS", "torch")
        reference = model(x)
        monkeypatch.setenv("HYBRID_NAS_KERNELS", "triton")
        triton_out = model(x)
    torch.testing.assert_close(triton_out, reference, atol=1e-4, rtol=1e-4)
    assert calls and set(calls) <= {name.replace("tiny_", "") + "_attention", "window_attention"}
