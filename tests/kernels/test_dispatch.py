"""Backend resolution rules shared by every op."""
from __future__ import annotations

import pytest
import torch

from kernels import BACKEND_ENV_VAR, KernelBackendError
from kernels._dispatch import resolve_backend


def test_cpu_tensors_use_the_reference_and_forcing_works(monkeypatch) -> None:
    x = torch.zeros(2)
    monkeypatch.delenv(BACKEND_ENV_VAR, raising=False)
    assert resolve_backend("op", (x,), None) == "torch"
    assert resolve_backend("op", (x,), "triton") == "triton"
    monkeypatch.setenv(BACKEND_ENV_VAR, "triton")
    assert resolve_backend("op", (x,), None) == "triton"
    assert resolve_backend("op", (x,), "torch") == "torch"  # the argument wins over the environment


def test_gradients_fall_back_to_the_reference_and_say_so(caplog) -> None:
    x = torch.zeros(2, requires_grad=True)
    with caplog.at_level("WARNING"):
        assert resolve_backend("grad_op", (x,), "triton") == "torch"
    assert "forward-only" in caplog.text
    with torch.no_grad():
        assert resolve_backend("grad_op", (x,), "triton") == "triton"


def test_unknown_backend_is_a_clear_error(monkeypatch) -> None:
    with pytest.raises(KernelBackendError, match="backend argument is 'cuda'; expected one of auto, triton, torch"):
        resolve_backend("op", (torch.zeros(1),), "cuda")
    monkeypatch.setenv(BACKEND_ENV_VAR, "fast")
    with pytest.raises(KernelBackendError, match=r"\$HYBRID_NAS_KERNELS is 'fast'"):
        resolve_backend("op", (torch.zeros(1),), None)
