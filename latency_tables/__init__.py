"""Latency of architectures on a target: targets, SQLAlchemy tables of measured blocks, lookup and estimation.

``predict(spec, "a100")`` -> `Prediction` (``latency_ms``, per-stage breakdown, ``source``: measured, or estimated
and from what). Knows specs and how to build them (search_spaces), never the search. Names load on first use
(`common.lazy`), so `latency_tables.targets` is read without torch.
"""
from __future__ import annotations

from common.lazy import lazy_namespace

_EXPORTS = {
    **dict.fromkeys(("Block", "decompose", "space_blocks"), "blocks"),
    "EstimationError": "estimate",
    **dict.fromkeys(("LatencyTable", "Prediction", "StageLatency", "open_table", "predict"), "table"),
    **dict.fromkeys(("NETWORK_PASSES", "Drift", "TableMeasurer"), "measurer"),
    **dict.fromkeys(("DeviceMismatchError", "LatencyDB", "LatencyDBError"), "storage"),
    **dict.fromkeys(("TARGETS", "Target", "TargetUnavailableError", "UnknownTargetError", "get_target"), "targets"),
}
__all__ = sorted(_EXPORTS)

__getattr__, __dir__ = lazy_namespace(__name__, _EXPORTS)
