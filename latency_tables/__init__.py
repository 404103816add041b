"""Latency of architectures on a target: targets, SQLAlchemy tables of measured blocks, lookup and estimation.

``predict(spec, "a100")`` -> `Prediction` (``latency_ms``, per-stage breakdown, ``source``: measured, or estimated
and from what). Knows specs and how to build them (search_spaces), never the search.
"""
from __future__ import annotations

from latency_tables.blocks import Block, decompose, space_blocks
from latency_tables.estimate import EstimationError
from latency_tables.predict import NETWORK_PASSES, LatencyTable, Prediction, StageLatency, open_table, predict
from latency_tables.storage import DeviceMismatchError, LatencyDB, LatencyDBError
from latency_tables.targets import TARGETS, Target, TargetUnavailableError, UnknownTargetError, get_target

__all__ = [
    "predict", "open_table", "Prediction", "StageLatency", "LatencyTable", "Block", "decompose", "space_blocks",
    "TARGETS", "Target", "get_target", "LatencyDB", "LatencyDBError", "DeviceMismatchError", "EstimationError",
    "TargetUnavailableError", "UnknownTargetError", "NETWORK_PASSES",
]
