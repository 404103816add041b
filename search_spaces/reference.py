"""Published architectures expressed in the space (anchors for comparisons), and tiny ones for tests.

The "-like" names are honest: each keeps its paper's mixer, widths, depths, heads and stem stride, but uses this
space's shared stems, transitions and head, so params/FLOPs differ a little from the papers (see README).
"""
from __future__ import annotations

from search_spaces.spec import (
    ArchSpec, ConvMixer, DownsampleSpec, HeadSpec, LinearMixer, QnAMixer, SingleHeadMixer, StageSpec, StemSpec,
    StripMixer, WindowMixer,
)

__all__ = ["REFERENCE_ARCHS", "CIFAR_REFERENCE_ARCHS", "TINY_ARCHS"]

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


# CIFAR-scale members of the same families, every one a point of `CIFAR_SPACE` (32x32 images, stride-4 stem, so
# stages see 8x8, 4x4, 2x2 and 1x1 maps), for benchmarks/search_vs_reference.py. Scaling rule: each keeps its paper's
# mixer, stem kind, transition, stage pattern, width ratio and head dim (32; CSWin 16 so stripes get two heads),
# with the widest stage at 256 and each paper's depths cut to the CIFAR space's (deepest choice per stage):
# - Swin-T 96/192/384/768 x 2/2/6/2, window 7 -> 32/64/128/256 x 2/2/3/2, window 4 (7 is not a choice; 4 splits
#   the 8x8 map in four as Swin's 7 splits 56x56 in 64), shifted;
# - ConvNeXt-T 96..768 x 3/3/9/3, kernel 7 -> 32..256 x 2/2/3/2, kernel 7;
# - L2ViT-T (conv stem, window/linear alternation, window 7) -> 32..256 x 2/2/3/2, window 4;
# - CSWin-T 64..512 x 1/2/21/1, stripes 1/2/7/7 -> 32..256 x 1/2/3/1, stripes 1/2/4/4 (4 covers its 2x2 map);
# - SHViT-S1 (stride-16 conv stem, RepViT stage, then single-head 128/224/320 x 2/4/5, partial 3/14 of the
#   channels, qk 16, MLP ratio 2, SHViT merging) -> conv stem stride 4, 64/128/192 x 1/2/3, partial 1/4, qk 16;
# - QnA-ViT-T (QnA, QnA, local-window, QnA, local-window stages with QnA downsampling) -> four stages QnA 32 x 1,
#   QnA 64 x 2, window 128 x 3 (window 4, no shift), window 256 x 1, MLP ratio 4.
_CIFAR_WIDTHS = (32, 64, 128, 256)
_CIFAR_DEPTHS = (2, 2, 3, 2)


def _cifar(name: str, stages: tuple[StageSpec, ...], stem_kind: str = "patch") -> ArchSpec:
    return ArchSpec(name=name, stem=StemSpec(stride=4, width=stages[0].width, kind=stem_kind), stages=stages,
                    head=HeadSpec(10))


CIFAR_REFERENCE_ARCHS: dict[str, ArchSpec] = {
    "swin_cifar": _cifar("swin_cifar", _four_stages(tuple(WindowMixer(w // 32, 4) for w in _CIFAR_WIDTHS),
                                                     _CIFAR_WIDTHS, _CIFAR_DEPTHS)),
    "convnext_cifar": _cifar("convnext_cifar", _four_stages((ConvMixer(7),) * 4, _CIFAR_WIDTHS, _CIFAR_DEPTHS)),
    "l2vit_cifar": _cifar("l2vit_cifar", _four_stages(tuple(LinearMixer(w // 32, True, 4) for w in _CIFAR_WIDTHS),
                                                       _CIFAR_WIDTHS, _CIFAR_DEPTHS), stem_kind="conv"),
    "cswin_cifar": _cifar("cswin_cifar", _four_stages(tuple(StripMixer(w // 16, sw) for w, sw in
                                                            zip(_CIFAR_WIDTHS, (1, 2, 4, 4))),
                                                      _CIFAR_WIDTHS, (1, 2, 3, 1))),
    "shvit_cifar": _cifar("shvit_cifar", (
        StageSpec(ConvMixer(3, "repvit"), 64, 1, mlp_ratio=2.0),
        StageSpec(SingleHeadMixer(partial_dim=32, qk_dim=16), 128, 2, mlp_ratio=2.0, downsample=_SHVIT),
        StageSpec(SingleHeadMixer(partial_dim=48, qk_dim=16), 192, 3, mlp_ratio=2.0, downsample=_SHVIT)),
        stem_kind="conv"),
    "qna_cifar": _cifar("qna_cifar", (
        StageSpec(QnAMixer(num_heads=1), 32, 1),
        StageSpec(QnAMixer(num_heads=2), 64, 2, downsample=DownsampleSpec("qna", 4)),
        StageSpec(WindowMixer(num_heads=4, window_size=4, shift=False), 128, 3, downsample=DownsampleSpec("qna", 8)),
        StageSpec(WindowMixer(num_heads=8, window_size=4, shift=False), 256, 1,
                  downsample=DownsampleSpec("qna", 16)))),
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
