"""Accuracy proxies by name: lookups of stored counts, zero-cost scores of an untrained network, a learned ranker
and a short-training proxy.

Every proxy scores an `ArchSpec`; higher means predicted more accurate. `score(name, spec, ...)` is the entry point
the search calls: it builds a fresh network, seeds it, times the proxy and returns a `ProxyResult`; a proxy that
cannot give a finite value raises `ProxyError` (the search records the trial as failed with that message).

Modules, one per kind: `registry` (`PROXIES`, their names, kinds and descriptions; no torch, so the command line
lists them at once), `lookup` (params, flops), `zero_cost` (synflow, naswot, swap, grad_norm, snip, zico, meco,
and AZ-NAS's components), `learned` (the ranker), `training` (short_train), `scoring` (`score`). Names load on
first use (`common.lazy`).
"""
from __future__ import annotations

from common.lazy import lazy_namespace

_EXPORTS = {
    **dict.fromkeys(("ProxyError", "Proxy", "PROXIES", "DATA_FREE", "KINDS", "ZICO_SPLITS", "MECO_CHANNELS"),
                    "registry"),
    **dict.fromkeys(("ProxyJob", "ProxyResult", "ReportFn", "score"), "scoring"),
    **dict.fromkeys(("LOOKUPS", "lookup_score"), "lookup"),
    **dict.fromkeys(("synflow_score", "naswot_score", "swap_score", "grad_norm_score", "snip_score", "zico_score",
                     "meco_score", "az_nas_components"), "zero_cost"),
    **dict.fromkeys(("RANKER_FEATURES", "ranker_features"), "learned"),
    **dict.fromkeys(("TrainRecipe", "short_train"), "training"),
}
__all__ = sorted(_EXPORTS)

__getattr__, __dir__ = lazy_namespace(__name__, _EXPORTS)
