"""The counter: what a forward runs, kernel by kernel, on the meta device."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from latency_tables.counting import count_kernels, kernels_of, trace
from search_spaces import TINY_ARCHS, build_model


class _Views(nn.Module):
    """x.view, permute, reshape of a contiguous tensor, expand: no kernel; one add: one kernel."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x.view(x.shape[0], -1).view(x.shape).permute(0, 2, 3, 1).permute(0, 3, 1, 2).reshape(x.shape)
        return y + x[:, :1].expand_as(x)


def _meta(shape, dtype=torch.float16):
    return torch.empty(shape, device="meta", dtype=dtype)


def test_views_are_no_kernels_and_an_op_moves_its_inputs_and_output() -> None:
    ops, _ = trace(_Views(), _meta((3, 5, 7, 9)), fuse_project_kernels=False)
    assert [op.name for op in ops] == ["add"]
    elements = 3 * 5 * 7 * 9
    # x read once, the expanded slice read as its storage (the whole of x's storage here: it is a view of x),
    # the output written once; fp16 = 2 bytes
    kernels = kernels_of(ops, set(), "eager")
    assert kernels[0].bytes == 2 * (elements + elements + elements)


def test_a_dtype_cast_is_a_kernel_and_counted_at_both_sizes() -> None:
    ops, _ = trace(nn.Identity(), _meta((4, 6), torch.float32), fuse_project_kernels=False)
    assert ops == []
    module = type("Cast", (nn.Module,), {"forward": lambda self, x: x.to(torch.float16)})()
    kernels = kernels_of(*trace(module, _meta((4, 6), torch.float32), False), "eager")
    assert len(kernels) == 1 and kernels[0].bytes == 4 * 24 + 2 * 24


def test_sdpa_is_one_attention_kernel_with_its_flops() -> None:
    module = type("Attn", (nn.Module,), {"forward": lambda self, q: F.scaled_dot_product_attention(q, q, q)})()
    kernels = kernels_of(*trace(module, _meta((2, 3, 49, 16)), False), "eager")
    assert [k.op_class for k in kernels] == ["attention"]
    assert kernels[0].flops == 2 * 2 * 3 * 49 * 49 * 16 * 2  # q k^T and p v, 2 FLOPs a multiply-add
    assert kernels[0].bytes == 2 * 2 * 3 * 49 * 16 * 4  # q, k, v (distinct tensors read once each) + out


@pytest.mark.parametrize("arch", ["tiny_window", "tiny_linear", "tiny_strip", "tiny_single_head"])
def test_a_project_attention_op_is_one_kernel_with_the_triton_implementation(arch) -> None:
    spec = TINY_ARCHS[arch]
    fused = count_kernels(lambda: build_model(spec), (1, 3, 32, 32), torch.float16, True, ("eager",))["eager"]
    reference = count_kernels(lambda: build_model(spec), (1, 3, 32, 32), torch.float16, False, ("eager",))["eager"]
    attention = [k for k in fused if k.op_class == "attention"]
    blocks_with_attention = sum(s.depth for s in spec.stages if s.mixer.kind == arch.removeprefix("tiny_"))
    assert len(attention) >= blocks_with_attention  # one kernel per attention call, none for its internals
    assert len(fused) < len(reference)
    assert sum(k.flops for k in fused) == pytest.approx(sum(k.flops for k in reference), rel=0.05)


def test_compiled_runtime_fuses_pointwise_chains_and_keeps_compute_kernels() -> None:
    eager = count_kernels(lambda: nn.Sequential(nn.Linear(24, 48), nn.GELU(), nn.Dropout(0.0), nn.Linear(48, 24)),
                          (5, 24), torch.float16, False)
    assert [k.op_class for k in eager["eager"]] == ["gemm", "elementwise", "gemm"]
    compiled = eager["compiled"]
    assert sorted(k.op_class for k in compiled) == ["elementwise", "gemm", "gemm"]


def test_a_norm_and_its_pointwise_neighbours_are_one_compiled_kernel_moving_only_outside_tensors() -> None:
    counts = count_kernels(lambda: nn.Sequential(nn.LayerNorm(16), nn.ReLU(), nn.Hardtanh()), (7, 16), torch.float16,
                           False)
    assert [k.op_class for k in counts["eager"]] == ["norm", "elementwise", "elementwise"]
    (fused,) = counts["compiled"]
    # reads the input and the norm's weight and bias, writes the output; the intermediates stay in registers
    assert fused.op_class == "norm" and fused.bytes == 2 * (7 * 16 + 16 + 16 + 7 * 16)


def test_eval_batch_norm_is_elementwise_and_batch_norm_folding_removes_it() -> None:
    from search_spaces import fold_batchnorm
    counts = count_kernels(lambda: nn.Sequential(nn.Conv2d(8, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8)),
                           (1, 8, 9, 9), torch.float32, False, ("eager",))["eager"]
    assert [k.op_class for k in counts] == ["conv", "elementwise"]  # running statistics: no reduction
    spec = TINY_ARCHS["tiny_single_head"]  # RepViT and SHViT blocks: Conv-BN everywhere
    unfolded = count_kernels(lambda: build_model(spec), (1, 3, 32, 32), torch.float16, True, ("eager",))["eager"]
    folded = count_kernels(lambda: fold_batchnorm(build_model(spec)), (1, 3, 32, 32), torch.float16, True,
                           ("eager",))["eager"]
    batch_norms = sum(isinstance(m, nn.BatchNorm2d) for m in build_model(spec).modules())
    assert len(unfolded) - len(folded) >= batch_norms


def test_half_convolutions_on_nchw_inputs_pay_two_layout_transposes_in_eager_only() -> None:
    nchw = count_kernels(lambda: nn.Conv2d(8, 16, 3, padding=1), (2, 8, 11, 11), torch.float16, False)
    assert [k.op_class for k in nchw["eager"]] == ["elementwise", "conv", "elementwise"]
    assert [k.op_class for k in nchw["compiled"]] == ["conv"]
    depthwise = count_kernels(lambda: nn.Conv2d(8, 8, 3, padding=1, groups=8), (2, 8, 11, 11), torch.float16, False)
    assert [k.op_class for k in depthwise["eager"]] == ["dwconv"]


def test_autocast_casts_weights_once_and_runs_norms_in_fp32() -> None:
    module = nn.Sequential(nn.Linear(32, 32), nn.LayerNorm(32), nn.Linear(32, 32))
    ops, _ = trace(module.to("meta"), _meta((4, 32), torch.float32), False, autocast=torch.float16)
    names = [op.name for op in ops]
    # input and weight + bias of the first linear to half; the norm's half input back to fp32; the second
    # linear's fp32 input and its weight + bias to half
    assert names.count("_to_copy") == 3 + 1 + 3 and names.count("native_layer_norm") == 1
    norm = next(op for op in ops if op.name == "native_layer_norm")
    assert norm.inputs[0][1] == 4 * 4 * 32  # an fp32 input
