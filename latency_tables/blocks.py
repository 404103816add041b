"""An architecture as a sequence of measurable blocks, and every block the space can produce.

A `Block` is one unit at one input shape: the stem, a stage's transition, one of a stage's blocks, or the head.
Its `key` is the canonical JSON of its full description (role + spec), as nn-Meter and Once-for-All key their
tables; blocks of a stage that differ only in their position share a key unless the position changes the module
(Swin's shift on odd blocks, L2ViT's window/linear alternation).
"""
from __future__ import annotations

import dataclasses
import itertools
import json
from dataclasses import dataclass
from typing import Iterator

import torch
from torch import nn

from search_spaces import ArchSpec, DownsampleSpec, SearchSpace, StemSpec
from search_spaces.mixers import build_block
from search_spaces.mixers.common import timm
from search_spaces.mixer_registry import mixer_entry
from search_spaces.spec import MixerSpec, mixer_types, mlp_hidden_width
from search_spaces.transitions import build_stem, build_transition

__all__ = ["Block", "decompose", "space_blocks"]

ROLES = ("stem", "transition", "block", "head")


@dataclass(frozen=True)
class Block:
    """One measurable unit. `in_shape` is (C, H, W) of its input; `stage` is -1 for the stem, len(stages) for
    the head. `description` is the canonical JSON of the role-specific spec."""
    role: str
    description: str
    in_shape: tuple[int, int, int]
    stage: int

    @property
    def key(self) -> str:
        """Canonical identity of the module (input shape excluded: tables store it in columns of its own)."""
        return json.dumps({"role": self.role, **json.loads(self.description)}, sort_keys=True, separators=(",", ":"))

    # ------------------------------------------------------------------------------------------ build and run
    def build(self) -> nn.Module:
        """The block as an `nn.Module` (eval mode is the caller's choice)."""
        data = json.loads(self.description)
        if self.role == "stem":
            return build_stem(StemSpec(**data["stem"]), in_chans=self.in_shape[0])
        if self.role == "transition":
            return build_transition(DownsampleSpec(**data["downsample"]), data["in_width"], data["out_width"],
                                    data["mlp_ratio"])
        if self.role == "block":
            mixer_data = dict(data["mixer"])
            mixer = mixer_types()[mixer_data.pop("kind")](**mixer_data)
            return build_block(data["width"], mixer, data["hidden"], data["position"])
        return timm.layers.NormMlpClassifierHead(self.in_shape[0], data["num_classes"], pool_type="avg",
                                                 norm_layer="layernorm2d")

    def example_input(self, batch: int, dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu",
                      generator: torch.Generator | None = None) -> torch.Tensor:
        """A random input in the layout the module takes: NCHW for stem and head, NHWC for stage layers."""
        c, h, w = self.in_shape
        shape = (batch, c, h, w) if self.role in ("stem", "head") else (batch, h, w, c)
        return torch.randn(shape, generator=generator).to(device=device, dtype=dtype)


def _describe(**fields: object) -> str:
    return json.dumps(fields, sort_keys=True, separators=(",", ":"))


def _mixer_dict(mixer: MixerSpec) -> dict:
    return {"kind": mixer.kind, **dataclasses.asdict(mixer)}


def _transition(downsample: DownsampleSpec, in_width: int, out_width: int, mlp_ratio: float,
                in_shape: tuple[int, int, int], stage: int) -> Block:
    # the MLP ratio only shapes QnA's downsampling block; leave it out of the other keys
    ratio = mlp_ratio if downsample.kind == "qna" else 0.0
    return Block("transition", _describe(downsample=dataclasses.asdict(downsample), in_width=in_width,
                                         out_width=out_width, mlp_ratio=ratio), in_shape, stage)


def _block(mixer: MixerSpec, width: int, hidden: int, position: int, hw: int | tuple[int, int], stage: int) -> Block:
    h, w = (hw, hw) if isinstance(hw, int) else hw
    return Block("block", _describe(mixer=_mixer_dict(mixer), width=width, hidden=hidden, position=position),
                 (width, h, w), stage)


def decompose(spec: ArchSpec, resolution: int) -> list[Block]:
    """The blocks of `spec` in execution order, repeats included, for a square `resolution` input.

    The network's latency is modelled as the sum over this list (identity transitions have no entry).
    """
    blocks = [Block("stem", _describe(stem=dataclasses.asdict(spec.stem)), (3, resolution, resolution), -1)]
    in_width, in_hw = spec.stem.width, (-(-resolution // spec.stem.stride),) * 2
    for index, (stage, out_hw) in enumerate(zip(spec.stages, spec.stage_resolutions(resolution, resolution))):
        if stage.downsample.kind != "none" or in_width != stage.width:
            blocks.append(_transition(stage.downsample, in_width, stage.width, stage.mlp_ratio, (in_width, *in_hw),
                                      index))
        entry = mixer_entry(stage.mixer.kind)
        blocks.extend(_block(stage.mixer, stage.width, stage.hidden_width, entry.position(stage.mixer, i), out_hw,
                             index) for i in range(stage.depth))
        in_width, in_hw = stage.width, out_hw
    blocks.append(Block("head", _describe(num_classes=spec.head.num_classes), (in_width, *in_hw), len(spec.stages)))
    return blocks


# ------------------------------------------------------------------------------------------ the whole space
def space_blocks(space: SearchSpace, resolution: int) -> list[Block]:
    """Every distinct block (key + input shape) that `sample_arch(trial, space)` can put in an architecture."""
    seen: dict[tuple[str, tuple[int, int, int]], Block] = {}
    for block in _space_block_candidates(space, resolution):
        seen.setdefault((block.key, block.in_shape), block)
    return list(seen.values())


def _space_block_candidates(space: SearchSpace, resolution: int) -> Iterator[Block]:
    for stride in space.stem_strides:
        sizes = [-(-resolution // stride)]  # feature size of stage i: ceil division by 2 per downsampling
        while len(sizes) < max(space.num_stages):
            sizes.append(-(-sizes[-1] // 2))
        for kind, width in itertools.product(space.stem_kinds, space.widths[0]):
            yield Block("stem", _describe(stem=dataclasses.asdict(StemSpec(stride, width, kind))),
                        (3, resolution, resolution), -1)
        for index, hw in enumerate(sizes):
            for width, mlp_ratio in itertools.product(space.widths[index], space.mlp_ratios):
                hidden = mlp_hidden_width(width, mlp_ratio)
                for kind in space.mixers:
                    entry = mixer_entry(kind)
                    for mixer in entry.choices(space, width):
                        for position in range(entry.period(mixer)):
                            yield _block(mixer, width, hidden, position, hw, index)
                if index == 0:
                    continue
                for in_width, kind in itertools.product(space.widths[index - 1], space.downsamples):
                    yield _transition(space.downsample(kind, width), in_width, width, mlp_ratio,
                                      (in_width, sizes[index - 1], sizes[index - 1]), index)
            if index + 1 in space.num_stages:
                for width in space.widths[index]:
                    yield Block("head", _describe(num_classes=space.num_classes), (width, hw, hw), index + 1)
