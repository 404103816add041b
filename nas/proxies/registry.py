"""The proxies by name, kind and description, without torch: `PROXIES`, `DATA_FREE`, `ProxyError`.

Each `Proxy` names its function as ``"module:function"`` under `nas.proxies`, imported on first call, so listing
the proxies (``launch.py --help``) loads no network code.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

from common.errors import UserFacingError

if TYPE_CHECKING:
    from nas.proxies.scoring import ProxyJob

__all__ = ["ProxyError", "Proxy", "PROXIES", "DATA_FREE", "KINDS", "ZICO_SPLITS", "MECO_CHANNELS"]

# lookup: a sum of stored block counts (the search computes it where it looks latencies up, with no worker);
# zero_cost: one pass over a minibatch of an untrained network; training: trains it on the data's splits.
KINDS = ("lookup", "zero_cost", "training")
ZICO_SPLITS = 2  # minibatches per ZiCo score, as the paper's code (two batches)
MECO_CHANNELS = 8  # channels per layer MeCo correlates, as the paper's meco_opt


class ProxyError(UserFacingError, RuntimeError):
    """A proxy could not produce a finite score (or lacks the data it needs); the message says why."""


@dataclass(frozen=True)
class Proxy:
    """A named proxy of one of `KINDS`: ``fn(job) -> (value, details)``, where `function` is
    ``"module:function"`` under `nas.proxies`."""
    name: str
    needs_data: bool
    description: str
    function: str
    kind: str = "zero_cost"

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"proxy {self.name!r}: kind must be one of {KINDS}, got {self.kind!r}")

    @property
    def fn(self) -> Callable[[ProxyJob], tuple[float, dict]]:
        module, function = self.function.split(":")
        return getattr(importlib.import_module(f"nas.proxies.{module}"), function)

    @property
    def needs_minibatch(self) -> bool:
        """Scores one minibatch of images and labels (a training proxy takes the data's splits instead)."""
        return self.needs_data and self.kind != "training"


PROXIES: dict[str, Proxy] = {p.name: p for p in (
    Proxy("params", False, "number of parameters (baseline)", "lookup:params_proxy", kind="lookup"),
    Proxy("flops", False, "multiply-adds of one image at the given resolution (baseline)", "lookup:flops_proxy",
          kind="lookup"),
    Proxy("synflow", False, "log10 synaptic flow of |theta| on an all-ones input (Tanaka et al., 2020)",
          "zero_cost:synflow_proxy"),
    Proxy("naswot", True, "log|K_H + I| of ReLU/GELU activation codes (Mellor et al., 2021)", "zero_cost:naswot_proxy"),
    Proxy("swap", True, "distinct per-unit ReLU/GELU activation patterns over the minibatch (Peng et al., 2024)",
          "zero_cost:swap_proxy"),
    Proxy("grad_norm", True, "sum of gradient L2 norms after one cross-entropy backward", "zero_cost:grad_norm_proxy"),
    Proxy("snip", True, "sum |theta * grad| after one cross-entropy backward (SNIP)", "zero_cost:snip_proxy"),
    Proxy("zico", True, "sum over tensors of log(sum mean|g| / std g) across minibatches (Li et al., 2023)",
          "zero_cost:zico_proxy"),
    Proxy("meco", True, f"sum of the smallest eigenvalues of {MECO_CHANNELS}-channel correlations of one image "
          "(Jiang et al., 2023)", "zero_cost:meco_proxy"),
    Proxy("ranker", True, "ridge regression of trained top-1 on log FLOPs, log MeCo and AZ-NAS's components "
          "(shipped fit: CIFAR-scale networks)", "learned:ranker_proxy"),
    Proxy("short_train", True, "test top-1 after a few hundred training steps (TrainRecipe)",
          "training:short_train_proxy", kind="training"),
)}
DATA_FREE: tuple[str, ...] = tuple(name for name, proxy in PROXIES.items() if not proxy.needs_data)
