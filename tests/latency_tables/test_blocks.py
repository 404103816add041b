"""Decomposition of architectures into blocks, and the enumeration of the whole space."""
from __future__ import annotations

import optuna
import pytest
import torch

from latency_tables.blocks import decompose, space_blocks
from search_spaces import CIFAR_SPACE, REFERENCE_ARCHS, TINY_ARCHS, sample_arch


@pytest.mark.parametrize("name", sorted(TINY_ARCHS))
def test_blocks_chain_like_the_network(name: str) -> None:
    spec = TINY_ARCHS[name]
    blocks = decompose(spec, 32)
    transitions = sum(1 for i, s in enumerate(spec.stages) if s.downsample.kind != "none"
                      or s.width != (spec.stages[i - 1].width if i else spec.stem.width))
    assert len(blocks) == 2 + transitions + sum(s.depth for s in spec.stages)
    assert [b.role for b in (blocks[0], blocks[-1])] == ["stem", "head"]
    x = blocks[0].example_input(2)
    with torch.no_grad():
        for block, following in zip(blocks, blocks[1:] + [None]):
            y = block.build().eval()(x)
            if following is None:
                assert y.shape == (2, spec.head.num_classes)
                continue
            c, h, w = following.in_shape
            # stem and head are NCHW, stage layers NHWC: convert between them as the backbone does
            if block.role == "stem":
                y = y.permute(0, 2, 3, 1)
            if following.role == "head":
                y = y.permute(0, 3, 1, 2)
                assert y.shape == (2, c, h, w)
            else:
                assert y.shape == (2, h, w, c)
            x = following.example_input(2) if following.role != "head" else y


def test_keys_separate_what_differs_and_share_what_does_not() -> None:
    swin = decompose(REFERENCE_ARCHS["swin_t_like"], 224)
    stage0 = [b for b in swin if b.stage == 0]
    assert len(stage0) == 2 and stage0[0].key != stage0[1].key  # shifted vs plain windows
    convnext = [b for b in decompose(REFERENCE_ARCHS["convnext_t_like"], 224) if b.stage == 2]
    assert len(convnext) == 10 and len({b.key for b in convnext if b.role == "block"}) == 1
    assert {b.in_shape for b in convnext if b.role == "block"} == {(384, 14, 14)}
    assert "role" in swin[0].key and '"stride":4' in swin[0].key


def test_space_blocks_cover_every_sampled_architecture() -> None:
    available = {(b.key, b.in_shape) for b in space_blocks(CIFAR_SPACE, 32)}
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=5))
    for _ in range(150):
        trial = study.ask()
        spec = sample_arch(trial, CIFAR_SPACE)
        study.tell(trial, 0.0)
        for block in decompose(spec, 32):
            assert (block.key, block.in_shape) in available, block
