"""The project's dtype names: what a table is measured in, what a target has a peak for, and the torch dtypes."""
from __future__ import annotations

import pytest
import torch

from common.dtypes import DTYPE_BYTES, DTYPES, PEAK_FLOPS_DTYPES, torch_dtype


def test_each_run_dtype_has_a_torch_dtype_and_its_size() -> None:
    assert DTYPES == ("fp32", "fp16", "bf16")
    assert [torch_dtype(name) for name in DTYPES] == [torch.float32, torch.float16, torch.bfloat16]
    assert {name: torch.empty(0, dtype=torch_dtype(name)).element_size() for name in DTYPES} == DTYPE_BYTES


def test_tf32_is_a_peak_rate_not_a_tensor_dtype() -> None:
    assert set(DTYPES) < set(PEAK_FLOPS_DTYPES) and "tf32" in PEAK_FLOPS_DTYPES
    with pytest.raises(KeyError):
        torch_dtype("tf32")
