"""The CIFAR-scale reference architectures: points of the CIFAR space, one per family, built through timm."""
from __future__ import annotations

import pytest
import torch

from search_spaces import CIFAR_REFERENCE_ARCHS, CIFAR_SPACE, MODEL_PREFIX, count_params
from search_spaces._compat import import_timm

timm = import_timm()

FAMILY_MIXERS = {"swin_cifar": {"window"}, "convnext_cifar": {"conv"}, "l2vit_cifar": {"linear"},
                 "cswin_cifar": {"strip"}, "shvit_cifar": {"conv", "single_head"}, "qna_cifar": {"qna", "window"}}


@pytest.mark.parametrize("name", sorted(CIFAR_REFERENCE_ARCHS))
def test_each_cifar_reference_is_a_point_of_the_cifar_space(name: str) -> None:
    spec = CIFAR_REFERENCE_ARCHS[name]
    assert {stage.mixer.kind for stage in spec.stages} == FAMILY_MIXERS[name]
    assert len(spec.stages) in CIFAR_SPACE.num_stages and spec.stem.stride in CIFAR_SPACE.stem_strides
    assert spec.stem.kind in CIFAR_SPACE.stem_kinds and spec.head.num_classes == CIFAR_SPACE.num_classes
    for i, stage in enumerate(spec.stages):
        assert stage.width in CIFAR_SPACE.widths[i] and stage.depth in CIFAR_SPACE.depths[i]
        assert stage.mlp_ratio in CIFAR_SPACE.mlp_ratios


@pytest.mark.parametrize("name", sorted(CIFAR_REFERENCE_ARCHS))
def test_each_cifar_reference_builds_with_timm_and_classifies_32px_images(name: str) -> None:
    torch.manual_seed(0)
    model = timm.create_model(MODEL_PREFIX + name).eval()
    with torch.no_grad():
        logits = model(torch.randn(3, 3, 32, 32))
    assert logits.shape == (3, 10) and torch.isfinite(logits).all()
    assert 0.3e6 < count_params(model) < 6e6  # CIFAR scale, not ImageNet scale
