"""What every Triton launcher asks about where it runs: the device's SM count, and whether its kernel runs under
Triton's CPU interpreter."""
from __future__ import annotations

import functools

import torch
import triton

__all__ = ["INTERPRETER_NUM_SMS", "num_sms", "interpreting"]

# Off CUDA (the interpreter) there is no device to ask; grid heuristics then plan for an H100 SXM's 132 SMs, so the
# interpreter runs the program grid the tests' shapes were written against.
INTERPRETER_NUM_SMS = 132


@functools.lru_cache(maxsize=None)
def _cuda_sms(index: int) -> int:
    return torch.cuda.get_device_properties(index).multi_processor_count


def num_sms(device: torch.device) -> int:
    """Streaming multiprocessors of `device`, asked of the device (cached per index); `INTERPRETER_NUM_SMS` for a
    device that is not CUDA."""
    if device.type != "cuda":
        return INTERPRETER_NUM_SMS
    return _cuda_sms(device.index if device.index is not None else torch.cuda.current_device())


def interpreting(kernel: object) -> bool:
    """Whether `kernel` was decorated under Triton's interpreter (``TRITON_INTERPRET=1`` before triton's import)."""
    return not isinstance(kernel, triton.runtime.JITFunction)
