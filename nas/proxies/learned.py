"""The learned proxy: a small fitted model over zero-cost scores and counts.

- ``ranker``: a learned combination (`nas.ranker.Ranker`, ridge regression) of `ranker_features`: log FLOPs (the
  stored counts, as the ``flops`` lookup), log ``meco``, and AZ-NAS's expressivity, progressivity and trainability
  (`az_nas_components`), each on a network built afresh from the seed. The shipped fit (`nas.ranker.SHIPPED_RANKER`)
  rests on trained CIFAR-scale networks at 32 px (its ``fitted_on``; cross-validated in
  benchmarks/proxy_quality.py); elsewhere its ranking is an extrapolation. ``details`` gives the features.
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch

from nas.proxies.lookup import lookup_score
from nas.proxies.registry import MECO_CHANNELS
from nas.proxies.zero_cost import az_nas_components, meco_score
from nas.ranker import Ranker, load_ranker
from search_spaces import ArchSpec

if TYPE_CHECKING:
    from nas.proxies.scoring import ModelFactory, ProxyJob

__all__ = ["RANKER_FEATURES", "ranker_features"]

RANKER_FEATURES = ("log_flops", "log_meco", "az_expressivity", "az_progressivity", "az_trainability")


def ranker_features(spec: ArchSpec, build: ModelFactory, images: torch.Tensor, resolution: int, seed: int
                    ) -> dict[str, float]:
    """`RANKER_FEATURES` of `spec` on `images` ``[B, 3, R, R]``: each score on a network `build` makes afresh from
    `seed` (as `score` would make it for that proxy alone)."""
    torch.manual_seed(seed)
    meco, _ = meco_score(build(), images, channels=MECO_CHANNELS)
    torch.manual_seed(seed)
    az = az_nas_components(build(), images)
    flops = lookup_score("flops", spec, resolution)
    return {"log_flops": math.log(flops), "log_meco": math.log(max(meco, 1e-12)),
            **{f"az_{name}": value for name, value in az.items()}}


_shipped_ranker: list[Ranker] = []


def ranker_proxy(job: ProxyJob) -> tuple[float, dict]:
    if not _shipped_ranker:
        _shipped_ranker.append(load_ranker())
    ranker = _shipped_ranker[0]
    features = ranker_features(job.spec, job.build, job.images, job.resolution, job.seed)
    return ranker.predict(features), {"features": features, "fitted_on": ranker.fitted_on}
