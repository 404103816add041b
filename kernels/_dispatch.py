"""Backend choice for every op in `kernels`: Triton kernel or plain-PyTorch reference.

Rules, in order:
1. `backend=` argument of the op, else the environment variable ``HYBRID_NAS_KERNELS``
   (``auto`` | ``triton`` | ``torch``; default ``auto``).
2. ``torch`` always runs the reference.
3. The Triton kernels are forward-only: when autograd needs gradients of an input, the op runs the reference
   (differentiable) path. Forcing ``triton`` in that case logs that fallback once per op, so it is never silent.
4. ``triton`` runs the kernel on any device (CPU tensors need ``TRITON_INTERPRET=1``, set before triton's import).
5. ``auto`` runs the kernel when every tensor is on a CUDA device, else the reference.
"""
from __future__ import annotations

import logging
import os

import torch

__all__ = ["BACKEND_ENV_VAR", "BACKENDS", "KernelBackendError", "resolve_backend"]

BACKEND_ENV_VAR = "HYBRID_NAS_KERNELS"
BACKENDS = ("auto", "triton", "torch")

_log = logging.getLogger(__name__)
_fallbacks_logged: set[str] = set()


class KernelBackendError(ValueError):
    """An unknown backend name was asked for."""


def resolve_backend(op_name: str, tensors: tuple[torch.Tensor, ...], backend: str | None) -> str:
    """Return ``"triton"`` or ``"torch"`` for one call of `op_name` on `tensors` (rules in the module docstring)."""
    choice = backend if backend is not None else os.environ.get(BACKEND_ENV_VAR, "auto")
    if choice not in BACKENDS:
        source = "backend argument" if backend is not None else f"${BACKEND_ENV_VAR}"
        raise KernelBackendError(f"{source} is {choice!r}; expected one of {', '.join(BACKENDS)}")
    if choice == "torch":
        return "torch"
    if torch.is_grad_enabled() and any(t.requires_grad for t in tensors):
        if choice == "triton" and op_name not in _fallbacks_logged:
            _fallbacks_logged.add(op_name)
            _log.warning("%s: the Triton kernel is forward-only; gradients are needed, so the PyTorch "
                         "reference runs instead", op_name)
        return "torch"
    if choice == "triton":
        return "triton"
    return "triton" if all(t.is_cuda for t in tensors) else "torch"
