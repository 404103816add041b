"""What one latency-table entry is: its key (`EntryKey`: block, shape, device, settings) and its value
(`Measurement`: median and spread in ms), each validated on construction."""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Mapping

from common.dtypes import DTYPES

__all__ = ["IMPLEMENTATIONS", "InvalidEntryError", "EntryKey", "Measurement", "canonical_json", "require", "check_text",
           "check_int"]

IMPLEMENTATIONS = ("triton", "torch")


class InvalidEntryError(ValueError):
    """An `EntryKey` or `Measurement` field is invalid; the message names the field."""


def require(condition: bool, message: str) -> None:
    if not condition:
        raise InvalidEntryError(message)


def check_text(value: Any, name: str) -> None:
    require(isinstance(value, str) and value != "", f"{name} must be a non-empty string, got {value!r}")


def check_int(value: Any, name: str, low: int) -> None:
    require(isinstance(value, int) and not isinstance(value, bool) and value >= low,
             f"{name} must be an integer >= {low}, got {value!r}")


@dataclass(frozen=True)
class EntryKey:
    """What identifies one measured entry: target, device, implementation, dtype, batch, block, input, software."""

    target: str
    device: str
    implementation: str  # "triton" | "torch"
    dtype: str  # "fp32" | "tf32" | "fp16" | "bf16"
    batch: int
    block_key: str  # the block's canonical JSON
    channels: int
    height: int
    width: int
    torch_version: str
    triton_version: str
    cuda_version: str

    def __post_init__(self) -> None:
        for name in ("target", "device", "block_key", "torch_version", "triton_version", "cuda_version"):
            check_text(getattr(self, name), f"EntryKey.{name}")
        require(self.implementation in IMPLEMENTATIONS,
                 f"EntryKey.implementation must be one of {IMPLEMENTATIONS}, got {self.implementation!r}")
        require(self.dtype in DTYPES, f"EntryKey.dtype must be one of {DTYPES}, got {self.dtype!r}")
        for name in ("batch", "channels", "height", "width"):
            check_int(getattr(self, name), f"EntryKey.{name}", 1)
        try:
            json.loads(self.block_key)
        except ValueError as exc:
            raise InvalidEntryError(f"EntryKey.block_key must be the block's JSON; it does not parse: {exc}") from None


def _utc_now() -> datetime:
    return datetime.now(timezone.utc)


@dataclass(frozen=True)
class Measurement:
    """A measured latency: median with the 20th/80th percentiles (milliseconds) over ``repeats`` timings.

    ``threads`` is the CPU thread count used (0 on GPU); ``settings`` the measurement settings, a JSON-able dict
    (normalised through JSON on construction, so tuples become lists); ``measured_at`` a timezone-aware time,
    stored in UTC.
    """

    median_ms: float
    p20_ms: float
    p80_ms: float
    repeats: int
    threads: int
    settings: dict[str, Any] = field(default_factory=dict, hash=False)
    measured_at: datetime = field(default_factory=_utc_now)

    def __post_init__(self) -> None:
        for name in ("median_ms", "p20_ms", "p80_ms"):
            value = getattr(self, name)
            require(isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
                     and value >= 0, f"Measurement.{name} must be a finite number >= 0, got {value!r}")
            object.__setattr__(self, name, float(value))
        require(self.p20_ms <= self.median_ms <= self.p80_ms,
                 f"Measurement needs p20_ms <= median_ms <= p80_ms, got {self.p20_ms} / {self.median_ms} / "
                 f"{self.p80_ms}")
        check_int(self.repeats, "Measurement.repeats", 1)
        check_int(self.threads, "Measurement.threads", 0)
        require(isinstance(self.settings, Mapping), f"Measurement.settings must be a dict, got {self.settings!r}")
        try:
            normalised = json.loads(canonical_json(self.settings))
        except (TypeError, ValueError) as exc:
            raise InvalidEntryError(f"Measurement.settings must be JSON-serialisable: {exc}") from None
        object.__setattr__(self, "settings", normalised)
        require(isinstance(self.measured_at, datetime) and self.measured_at.tzinfo is not None
                 and self.measured_at.utcoffset() is not None,
                 f"Measurement.measured_at must be a timezone-aware datetime (e.g. datetime.now(timezone.utc)), "
                 f"got {self.measured_at!r}")
        object.__setattr__(self, "measured_at", self.measured_at.astimezone(timezone.utc))


def canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), allow_nan=False)
