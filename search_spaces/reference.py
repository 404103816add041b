"""Published architectures expressed in the space (anchors for comparisons), and tiny ones for tests.

The "-like" names are honest: each keeps its paper's mixer, widths, depths, heads and stem stride, but uses this
space's shared stems, transitions and head, so params/FLOPs differ a little from the papers (see README).
"""
from __future__ import annotations

from search_spaces.spec import (
    ArchSpec, ConvMixer, DownsampleSpec, HeadSpec, LinearMixer, QnAMixer, SingleHeadMixer, StageSpec, StemSpec,
    StripMixer, WindowMixer,
)

__all__ = ["REFERENCE_ARCHS", "TINY_ARCHS"]

_NONE, _CONV2X2, _SHVIT = DownsampleSpec("none"), DownsampleSpec("conv2x2"), DownsampleSpec("shvit")


def _four_stages(mixers: tuple, widths: tuple[int, ...], depths: tuple[int, ...], mlp_ratio: float = 4.0,
                 downsample: DownsampleSpec = _CONV2X2) -> tuple[StageSpec, ...]:
    return tuple(StageSpec(mixer=m, width=w, depth=d, mlp_ratio=mlp_ratio, downsample=_NONE if i == 0 else downsample)
                 for i, (m, w, d) in enumerate(zip(mixers, widths, depths)))


REFERENCE_ARCHS: dict[str, ArchSpec] = {
    # Swin-T (Liu et al., 2021): 28M params, 4.5 GFLOPs at 224.
    "swin_t_like": ArchSpec(
        name="swin_t_like", stem=StemSpec(stride=4, width=96),
        stages=_four_stages(tuple(WindowMixer(num_heads=h, window_size=7) for h in (3, 6, 12, 24)),
                            (96, 192, 384, 768), (2, 2, 6, 2))),
    # ConvNeXt-T (Liu et al., 2022): 28M, 4.5G.
    "convnext_t_like": ArchSpec(
        name="convnext_t_like", stem=StemSpec(stride=4, width=96),
        stages=_four_stages((ConvMixer(7),) * 4, (96, 192, 384, 768), (3, 3, 9, 3))),
    # L2ViT-T (Zheng, 2025): 29M, 4.7G; window (LWA) and linear (LGA) blocks alternate in every stage.
    "l2vit_t_like": ArchSpec(
        name="l2vit_t_like", stem=StemSpec(stride=4, width=96, kind="conv"),
        stages=_four_stages(tuple(LinearMixer(num_heads=h, alternate=True, window_size=7) for h in (3, 6, 12, 24)),
                            (96, 192, 384, 768), (2, 2, 6, 2))),
    # CSWin-T (Dong et al., 2022): 23M, 4.3G; stripe widths 1, 2, 7, 7 (the last is full attention at 7x7).
    "cswin_t_like": ArchSpec(
        name="cswin_t_like", stem=StemSpec(stride=4, width=64),
        stages=_four_stages(tuple(StripMixer(num_heads=h, stripe_width=sw) for h, sw in
                                  ((2, 1), (4, 2), (8, 7), (16, 7))), (64, 128, 256, 512), (1, 2, 21, 1))),
    # SHViT-S1 (Yun & Ro, 2024): 6.3M, 241M FLOPs; stride-16 stem, first stage without attention.
    "shvit_s1_like": ArchSpec(
        name="shvit_s1_like", stem=StemSpec(stride=16, width=128, kind="conv"),
        stages=(StageSpec(ConvMixer(3, "repvit"), 128, 2, mlp_ratio=2.0),
                StageSpec(SingleHeadMixer(partial_dim=48, qk_dim=16), 224, 4, mlp_ratio=2.0, downsample=_SHVIT),
                StageSpec(SingleHeadMixer(partial_dim=68, qk_dim=16), 320, 5, mlp_ratio=2.0, downsample=_SHVIT))),
    # QnA-ViT-tiny (Arar et al., 2022): 16M, 2.5G. Its third stage (4 local-attention blocks, then 2 QnA blocks)
    # is two stages here; downsampling is QnA's stride-2 layer; local attention uses 14x14 / 7x7 windows.
    "qna_t_like": ArchSpec(
        name="qna_t_like", stem=StemSpec(stride=4, width=64),
        stages=(StageSpec(QnAMixer(num_heads=8), 64, 2),
                StageSpec(QnAMixer(num_heads=16), 128, 3, downsample=DownsampleSpec("qna", 16)),
                StageSpec(WindowMixer(num_heads=8, window_size=14, shift=False), 256, 4,
                          downsample=DownsampleSpec("qna", 32)),
                StageSpec(QnAMixer(num_heads=32), 256, 2),
                StageSpec(WindowMixer(num_heads=16, window_size=7, shift=False), 512, 2,
                          downsample=DownsampleSpec("qna", 64)))),
}


def _tiny(name: str, mixers: tuple, downsample: str = "conv2x2", stem_kind: str = "patch") -> ArchSpec:
    stages = []
    for i, (mixer, width, depth) in enumerate(zip(mixers, (32, 64, 96, 128), (1, 2, 1, 1))):
        transition = DownsampleSpec("none") if i == 0 else DownsampleSpec(downsample, width // 16 * (downsample == "qna"))
        stages.append(StageSpec(mixer=mixer, width=width, depth=depth, mlp_ratio=2.0, downsample=transition))
    return ArchSpec(name=name, stem=StemSpec(stride=4, width=32, kind=stem_kind), stages=tuple(stages),
                    head=HeadSpec(10))


# Small networks (CIFAR-sized, ~0.3-1M params) covering every mixer, stem and transition.
TINY_ARCHS: dict[str, ArchSpec] = {
    "tiny_conv": _tiny("tiny_conv", (ConvMixer(5), ConvMixer(3, "repvit"), ConvMixer(7))),
    "tiny_window": _tiny("tiny_window", (WindowMixer(2, 4), WindowMixer(4, 4), WindowMixer(6, 7))),
    "tiny_linear": _tiny("tiny_linear", (LinearMixer(2, True, 4), LinearMixer(4, False), LinearMixer(6, True, 2))),
    "tiny_single_head": _tiny("tiny_single_head", (ConvMixer(3, "repvit"), SingleHeadMixer(16, 16),
                                                   SingleHeadMixer(24, 8)), downsample="shvit", stem_kind="conv"),
    "tiny_strip": _tiny("tiny_strip", (StripMixer(2, 1), StripMixer(4, 2), StripMixer(6, 7))),
    "tiny_qna": _tiny("tiny_qna", (QnAMixer(4), QnAMixer(8, 5, 1), WindowMixer(6, 7, False)),
                      downsample="qna"),
}
