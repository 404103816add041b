"""Ops of the attention mixers: Triton kernels (forward, inference) with plain-PyTorch references beside them.

Each op dispatches per call: CUDA tensors -> Triton, CPU tensors -> reference, gradients -> reference;
``HYBRID_NAS_KERNELS=triton|torch`` or the ``backend=`` argument forces one (see `kernels._dispatch`).
"""
from __future__ import annotations

from kernels._dispatch import BACKEND_ENV_VAR, BACKENDS, KernelBackendError, observe_fused_kernels
from kernels.linear_attention import linear_attention
from kernels.qna import qna_attention
from kernels.single_head_attention import single_head_attention
from kernels.strip_attention import strip_attention
from kernels.window_attention import relative_bias, window_attention

__all__ = [
    "BACKEND_ENV_VAR", "BACKENDS", "KernelBackendError", "observe_fused_kernels",
    "linear_attention", "qna_attention", "relative_bias", "single_head_attention", "strip_attention",
    "window_attention",
]
