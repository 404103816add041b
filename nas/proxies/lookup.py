"""Lookup proxies: sums of the stored block counts, no network built.

- ``params``, ``flops``: baselines. FLOPs are multiply-adds of one ``resolution`` x ``resolution`` image, as
  `search_spaces.count_flops` counts them.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Callable

import torch

from latency_tables.block_costs import architecture_totals
from nas.proxies.registry import ProxyError
from search_spaces import ArchSpec, module_flops

if TYPE_CHECKING:
    from nas.proxies.scoring import ProxyJob

__all__ = ["LOOKUPS", "lookup_score"]

# lookup proxies: name -> score of an architecture at a resolution, from the stored block counts (no network built)
LOOKUPS: dict[str, Callable[[ArchSpec, int], float]] = {
    "params": lambda spec, resolution: float(architecture_totals(spec, resolution)[0]),
    "flops": lambda spec, resolution: float(architecture_totals(spec, resolution)[1]),
}


def lookup_score(name: str, spec: ArchSpec, resolution: int) -> float:
    """The value of lookup proxy `name` (`LOOKUPS`) for `spec` at `resolution`: what `score` computes by building
    the network, summed from stored block counts instead (equal within 1%, tests/nas/test_proxies.py)."""
    if name not in LOOKUPS:
        raise ProxyError(f"proxy {name!r} is not a lookup proxy; lookups: {', '.join(LOOKUPS)}")
    return LOOKUPS[name](spec, resolution)


def params_proxy(job: ProxyJob) -> tuple[float, dict]:
    return float(sum(p.numel() for p in job.build().parameters())), {}


def flops_proxy(job: ProxyJob) -> tuple[float, dict]:
    model = job.build()
    image = torch.zeros(1, 3, job.resolution, job.resolution, device=next(model.parameters()).device)
    return float(module_flops(model, image)), {"resolution": job.resolution}
