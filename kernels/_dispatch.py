"""Backend choice for every op in `kernels`: Triton kernel or plain-PyTorch reference.

Rules, in order:
1. `backend=` argument of the op, else the environment variable ``HYBRID_NAS_KERNELS``
   (``auto`` | ``triton`` | ``torch``; default ``auto``).
2. ``torch`` always runs the reference.
3. The Triton kernels are forward-only: when autograd needs gradients of an input, the op runs the reference
   (differentiable) path. Forcing ``triton`` in that case logs that fallback once per op, so it is never silent.
4. ``triton`` runs the kernel on any device (CPU tensors need ``TRITON_INTERPRET=1``, set before triton's import).
5. ``auto`` runs the kernel when every tensor is on a CUDA device, else the reference.

The ops that run as one Triton kernel are marked `fused_kernel`: inside `observe_fused_kernels(observer)` each call
is handed to the observer (the latency tables' counter uses this to count one kernel whose traffic is the op's
inputs and output, not the reference's intermediate tensors).
"""
from __future__ import annotations

import contextlib
import contextvars
import functools
import logging
import os
from typing import Callable, Iterator, TypeVar

import torch
from torch.utils._pytree import tree_leaves

from common.errors import UserFacingError

__all__ = ["BACKEND_ENV_VAR", "BACKENDS", "KernelBackendError", "resolve_backend", "fused_kernel",
           "observe_fused_kernels", "FusedKernelObserver"]

BACKEND_ENV_VAR = "HYBRID_NAS_KERNELS"
BACKENDS = ("auto", "triton", "torch")

_log = logging.getLogger(__name__)
_fallbacks_logged: set[str] = set()

# observer(op_name, run, inputs) -> output: `run()` computes the op as called; `inputs` are its tensor arguments.
FusedKernelObserver = Callable[[str, Callable[[], torch.Tensor], tuple[torch.Tensor, ...]], torch.Tensor]
_observer: contextvars.ContextVar[FusedKernelObserver | None] = contextvars.ContextVar("fused_kernel_observer",
                                                                                     default=None)
Op = TypeVar("Op", bound=Callable[..., torch.Tensor])


class KernelBackendError(UserFacingError, ValueError):
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


def fused_kernel(op_name: str) -> Callable[[Op], Op]:
    """Mark a public op whose Triton path is one kernel: inside `observe_fused_kernels`, its calls go through the
    observer (which decides whether and how to run it); outside, the op runs as it is."""
    def mark(op: Op) -> Op:
        @functools.wraps(op)
        def observed(*args, **kwargs):
            observer = _observer.get()
            if observer is None:
                return op(*args, **kwargs)
            inputs = tuple(t for t in tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor))
            return observer(op_name, lambda: op(*args, **kwargs), inputs)
        return observed  # type: ignore[return-value]
    return mark


@contextlib.contextmanager
def observe_fused_kernels(observer: FusedKernelObserver) -> Iterator[None]:
    """Inside, every call of a `fused_kernel` op is ``observer(op_name, run, inputs)`` (this thread/context only)."""
    token = _observer.set(observer)
    try:
        yield
    finally:
        _observer.reset(token)
