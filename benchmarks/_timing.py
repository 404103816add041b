"""Setup shared by the benchmarks that time networks on a target without a table."""
from __future__ import annotations

import torch

from latency_tables.measure import MeasureSettings, quick_settings
from latency_tables.table import default_settings
from latency_tables.targets import Target, current_device_string, get_target

__all__ = ["timing_setup"]


def timing_setup(target_name: str, resolution: int | None, repeats: int | None
                 ) -> tuple[Target, str, torch.device, MeasureSettings]:
    """(target, device string, torch device, settings) to time on `target_name` here; raises if this machine is
    not the target. `repeats` gives quick, noisier settings (`quick_settings`)."""
    target = get_target(target_name)
    device_string = current_device_string(target)
    settings = default_settings(target, resolution=resolution)
    if repeats:
        settings = quick_settings(settings, repeats)
    return target, device_string, torch.device(target.device_type), settings
