"""`ArchSpec` -> `HybridBackbone`, an `nn.Module` with timm's conventions.

``forward_features`` returns NCHW ``[B, C_last, H/r, W/r]``; ``forward_head``, ``reset_classifier``,
``feature_info`` (one entry per stage: ``num_chs``, ``reduction``, ``module='stages.i'``) and ``num_classes``
behave as in timm models, so ``features_only=True`` works through timm's `build_model_with_cfg`.
"""
from __future__ import annotations

import torch
from torch import nn

from search_spaces.mixers import build_block
from search_spaces.mixers.common import nchw, nhwc, timm, trunc_normal_
from search_spaces.spec import ArchSpec, StageSpec
from search_spaces.transitions import build_stem, build_transition

__all__ = ["HybridBackbone", "HybridStage", "build_model"]


class HybridStage(nn.Module):
    """A transition then `depth` blocks of one mixer; NCHW in and out (NHWC inside, as free views)."""

    def __init__(self, spec: StageSpec, in_width: int, drop_path_rates: list[float]) -> None:
        super().__init__()
        self.downsample = build_transition(spec.downsample, in_width, spec.width, spec.mlp_ratio)
        self.blocks = nn.Sequential(*[build_block(spec.width, spec.mixer, spec.hidden_width, i, rate)
                                      for i, rate in enumerate(drop_path_rates)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Contiguous NHWC in: a no-op after channels-last layers, one copy after an NCHW stem. Blocks then see
        # the layout they are timed with in the latency tables.
        return nchw(self.blocks(self.downsample(nhwc(x).contiguous())))


class HybridBackbone(nn.Module):
    """A backbone from the hybrid search space (stem -> stages -> pool/LayerNorm/Linear head)."""

    def __init__(self, spec: ArchSpec, num_classes: int | None = None, in_chans: int = 3, drop_rate: float = 0.0,
                 drop_path_rate: float = 0.0) -> None:
        super().__init__()
        self.spec = spec
        self.num_classes = spec.head.num_classes if num_classes is None else num_classes
        self.stem = build_stem(spec.stem, in_chans)
        depth_total = sum(stage.depth for stage in spec.stages)
        rates = [drop_path_rate * i / max(1, depth_total - 1) for i in range(depth_total)]  # linear, as timm
        stages, in_width, start, self.feature_info = [], spec.stem.width, 0, []
        for i, (stage, reduction) in enumerate(zip(spec.stages, spec.reductions)):
            stages.append(HybridStage(stage, in_width, rates[start:start + stage.depth]))
            self.feature_info.append(dict(num_chs=stage.width, reduction=reduction, module=f"stages.{i}"))
            in_width, start = stage.width, start + stage.depth
        self.stages = nn.Sequential(*stages)
        self.num_features = self.head_hidden_size = in_width
        self.head = timm.layers.NormMlpClassifierHead(in_width, self.num_classes, pool_type="avg",
                                                      drop_rate=drop_rate, norm_layer="layernorm2d")
        self.apply(_init_weights)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, in_chans, H, W]`` -> ``[B, num_features, H/r, W/r]``."""
        return self.stages(self.stem(x))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        return self.head(x, pre_logits=pre_logits)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def get_classifier(self) -> nn.Module:
        return self.head.fc

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        self.num_classes = num_classes
        self.head.reset(num_classes, pool_type=global_pool)


def _init_weights(module: nn.Module) -> None:
    if isinstance(module, nn.Linear):
        trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)


def build_model(spec: ArchSpec, num_classes: int | None = None, in_chans: int = 3, drop_rate: float = 0.0,
                drop_path_rate: float = 0.0) -> HybridBackbone:
    """Build the network of `spec` (``num_classes=None`` keeps ``spec.head.num_classes``; 0 gives features only)."""
    return HybridBackbone(spec, num_classes=num_classes, in_chans=in_chans, drop_rate=drop_rate,
                          drop_path_rate=drop_path_rate)
