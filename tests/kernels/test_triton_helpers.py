"""The launchers' view of their device: SMs asked of the device, the interpreter told apart from a compiled kernel."""
from __future__ import annotations

import torch

from kernels._triton import INTERPRETER_NUM_SMS, interpreting, num_sms


def test_a_device_that_is_not_cuda_plans_for_the_interpreter_sm_count() -> None:
    assert num_sms(torch.device("cpu")) == INTERPRETER_NUM_SMS == 132


def test_a_cuda_device_is_asked_for_its_sm_count(monkeypatch) -> None:
    import kernels._triton as helpers

    class Properties:
        multi_processor_count = 78

    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda index: Properties())
    helpers._cuda_sms.cache_clear()
    assert num_sms(torch.device("cuda", 3)) == 78
    helpers._cuda_sms.cache_clear()


def test_a_plain_function_is_an_interpreted_kernel() -> None:
    assert interpreting(lambda: None)
