"""One trial's evaluation, as a Ray worker runs it: the proxy score of an architecture.

The architecture's params and FLOPs are not counted here: the driver looks them up from the stored block counts
where it looks its latency up (`latency_tables.block_costs.architecture_totals`).

`evaluate(request, data)` never raises for a bad architecture: a proxy failure, a non-finite score or running
out of memory come back as an `Outcome` with ``ok=False`` and a one-line ``error``, which the driver records as a
FAIL trial. Only a lost worker (the process died) surfaces as a Ray error on the driver's side.
"""
from __future__ import annotations

import os
import socket
import time
from dataclasses import dataclass, field

import torch

from nas.data import ImageData, batches
from nas.proxies import PROXIES, ProxyError, ReportFn, score
from search_spaces import ArchSpec, SpecError

__all__ = ["EvalRequest", "ProxyData", "Outcome", "evaluate", "proxy_minibatch", "PROXY_BATCH"]

PROXY_BATCH = 64  # images in the minibatch of the zero-cost data proxies


@dataclass(frozen=True)
class ProxyData:
    """Images for the data proxies: uint8 ``[N, H, W, 3]`` and int64 ``[N]`` per split."""
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    num_classes: int


@dataclass(frozen=True)
class EvalRequest:
    """What to evaluate: `spec_json` (``ArchSpec.to_json``) with the proxy `proxy` at `proxy_resolution` pixels,
    on `threads` threads."""
    spec_json: str
    proxy: str
    proxy_resolution: int
    seed: int = 0
    train_steps: int = 300
    threads: int = 1


@dataclass(frozen=True)
class Outcome:
    """The result of one evaluation: ``value`` of the proxy (higher is better) or, with ``ok=False``, ``error``;
    `params` and `flops` where whoever evaluated knew them (the driver, from its lookups)."""
    ok: bool
    value: float | None = None
    error: str | None = None
    proxy_seconds: float = 0.0
    details: dict = field(default_factory=dict)
    params: int | None = None
    flops: int | None = None
    seconds: float = 0.0
    worker: str = ""


def proxy_minibatch(data: ProxyData | ImageData, resolution: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The zero-cost data proxies' minibatch: the first shuffled batch of `PROXY_BATCH` training images
    ``[B, 3, resolution, resolution]`` with their labels ``[B]``, the same for every architecture (proxies compare
    networks, not minibatches)."""
    return next(batches(data.x_train, data.y_train, PROXY_BATCH, resolution, shuffle=True, seed=seed))


def evaluate(request: EvalRequest, data: ProxyData | None = None, report: ReportFn | None = None) -> Outcome:
    """Score `request`'s architecture; failures of the architecture come back as ``Outcome(ok=False, error=...)``.
    `report(step, accuracy) -> stop?` gets ``short_train``'s intermediate accuracies (Optuna pruning); a stopped
    evaluation comes back with ``details["stopped_early"]``."""
    started = time.perf_counter()
    worker = f"{socket.gethostname()}:{os.getpid()}"
    torch.set_num_threads(request.threads)
    try:
        spec = ArchSpec.from_json(request.spec_json)
        proxy = PROXIES.get(request.proxy)
        if proxy is None:
            raise ProxyError(f"unknown proxy {request.proxy!r}")
        kwargs: dict = {"seed": request.seed, "resolution": request.proxy_resolution, "steps": request.train_steps}
        if proxy.needs_data:
            if data is None:
                raise ProxyError(f"proxy {request.proxy!r} needs data and none was given")
            kwargs["num_classes"] = data.num_classes
            if not proxy.needs_minibatch:  # a training proxy: the splits
                kwargs.update(train_data=(data.x_train, data.y_train), test_data=(data.x_test, data.y_test),
                              report=report)
            else:
                kwargs["images"], kwargs["labels"] = proxy_minibatch(data, request.proxy_resolution, request.seed)
        result = score(request.proxy, spec, **kwargs)
    except torch.OutOfMemoryError as error:
        return Outcome(ok=False, error=f"out of memory: {str(error).splitlines()[0]}",
                       seconds=time.perf_counter() - started, worker=worker)
    except (ProxyError, SpecError, ValueError, RuntimeError) as error:
        return Outcome(ok=False, error=f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}",
                       seconds=time.perf_counter() - started, worker=worker)
    return Outcome(ok=True, value=result.value, proxy_seconds=result.seconds, details=result.details,
                   seconds=time.perf_counter() - started, worker=worker)
