"""FLOPs and params of an `ArchSpec` (or any module), counted by fvcore.

Units: like fvcore and the papers' "FLOPs" columns, one multiply-add counts as one FLOP. fvcore counts convs,
linears, matmuls, einsums and norms (BatchNorm 2 per element in eval, LayerNorm/GroupNorm 5); the handles below
add what it skips that scales with the network: ``scaled_dot_product_attention`` (both products), softmax and GELU
(one per element). Other element-wise ops (adds, ReLU, exp) are not counted, as in fvcore.
"""
from __future__ import annotations

from typing import Any

import torch
from fvcore.nn import FlopCountAnalysis
from fvcore.nn.jit_handles import get_shape
from torch import nn

from search_spaces.backbone import build_model
from search_spaces.spec import ArchSpec

__all__ = ["count_flops", "count_params", "module_flops"]


def _sdpa_flop(inputs: list[Any], outputs: list[Any]) -> int:
    q, k, v = (get_shape(t) for t in inputs[:3])  # [..., L, E], [..., S, E], [..., S, Ev]
    batch = int(torch.tensor(q[:-2]).prod()) if len(q) > 2 else 1
    return batch * q[-2] * k[-2] * (q[-1] + v[-1])


def _elementwise_flop(inputs: list[Any], outputs: list[Any]) -> int:
    return int(torch.tensor(get_shape(outputs[0])).prod())


_EXTRA_HANDLES = {
    "aten::scaled_dot_product_attention": _sdpa_flop,
    "aten::softmax": _elementwise_flop,
    "aten::_softmax": _elementwise_flop,
    "aten::gelu": _elementwise_flop,
}


def module_flops(module: nn.Module, *inputs: torch.Tensor) -> int:
    """FLOPs (multiply-adds) of one forward of `module` on `inputs`, traced on the PyTorch reference path."""
    was_training = module.training
    module.eval()
    try:
        with torch.no_grad():
            analysis = FlopCountAnalysis(module, inputs).set_op_handle(**_EXTRA_HANDLES)
            analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
            return int(analysis.total())
    finally:
        module.train(was_training)


def count_flops(spec: ArchSpec, resolution: int = 224, batch: int = 1) -> int:
    """FLOPs (multiply-adds) of `spec` for a ``[batch, 3, resolution, resolution]`` input, head included."""
    return module_flops(build_model(spec), torch.zeros(batch, 3, resolution, resolution))


def count_params(spec: ArchSpec | nn.Module) -> int:
    """Number of parameters of `spec`'s network (or of a module)."""
    module = build_model(spec) if isinstance(spec, ArchSpec) else spec
    return sum(p.numel() for p in module.parameters())
