"""The precisions the project names, written once.

`DTYPES`: what a network runs in, so what a latency table is measured in and what ``--dtype`` accepts.
`PEAK_FLOPS_DTYPES`: what a target's spec sheet gives a dense peak for; tf32 is fp32 tensors on tensor cores, a
rate and not a tensor dtype.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

__all__ = ["DTYPES", "DTYPE_BYTES", "PEAK_FLOPS_DTYPES", "torch_dtype"]

_TORCH_NAMES = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}
DTYPES: tuple[str, ...] = tuple(_TORCH_NAMES)
DTYPE_BYTES = {"fp32": 4, "fp16": 2, "bf16": 2}  # bytes per element
PEAK_FLOPS_DTYPES: tuple[str, ...] = ("fp32", "tf32", "fp16", "bf16")


def torch_dtype(name: str) -> "torch.dtype":
    """The torch dtype of one of `DTYPES` (``"bf16"`` -> ``torch.bfloat16``); `KeyError` for any other name."""
    import torch
    return getattr(torch, _TORCH_NAMES[name])
