"""`score(name, spec, ...)`: one proxy on a freshly built, seeded network, timed, as a `ProxyResult`."""
from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import nn

from nas.proxies.registry import DATA_FREE, PROXIES, ProxyError
from nas.proxies.training import ArrayLike, ReportFn, TrainRecipe
from search_spaces import ArchSpec, build_model

__all__ = ["ProxyJob", "ProxyResult", "ReportFn", "score"]

_log = logging.getLogger(__name__)
ModelFactory = Callable[[], nn.Module]


@dataclass(frozen=True)
class ProxyResult:
    """One proxy evaluation: `value` (higher = predicted better), wall time in `seconds`, and proxy `details`."""
    name: str
    value: float
    seconds: float
    details: dict = field(default_factory=dict)


@dataclass(frozen=True)
class ProxyJob:
    """Everything a proxy may use. `build` returns a fresh network each call (initialised from the global RNG,
    which `score` seeds); `images` ``[B, 3, R, R]`` float32 (normalised) and `labels` ``[B]`` int64 are the
    minibatch of the data proxies; `train_data`/`test_data` ``(x uint8 [N, H, W, 3], y int64 [N])`` feed
    ``short_train``."""
    spec: ArchSpec
    build: ModelFactory
    resolution: int
    seed: int
    device: torch.device
    images: torch.Tensor | None = None
    labels: torch.Tensor | None = None
    train_data: tuple[torch.Tensor, torch.Tensor] | None = None
    test_data: tuple[torch.Tensor, torch.Tensor] | None = None
    recipe: TrainRecipe = TrainRecipe()
    report: ReportFn | None = None


def _check_batch(images: torch.Tensor, labels: torch.Tensor, resolution: int) -> None:
    if images.ndim != 4 or images.shape[1] != 3 or not images.dtype.is_floating_point:
        raise ValueError(f"images must be float [B, 3, H, W]; got {images.dtype} {list(images.shape)}")
    if tuple(images.shape[-2:]) != (resolution, resolution):
        raise ValueError(f"images are {images.shape[-2]}x{images.shape[-1]} but resolution is {resolution}; "
                         f"pass resolution={images.shape[-1]} or resize the batch")
    if labels.ndim != 1 or labels.shape[0] != images.shape[0] or labels.dtype != torch.int64:
        raise ValueError(f"labels must be int64 [{images.shape[0]}]; got {labels.dtype} {list(labels.shape)}")
    if images.shape[0] < 2:
        raise ValueError(f"data proxies need a minibatch of at least 2 images, got {images.shape[0]}")


def _resolve_num_classes(spec: ArchSpec, num_classes: int | None, labels: ArrayLike | None) -> int:
    classes = num_classes if num_classes is not None else spec.head.num_classes
    top = int(torch.as_tensor(labels).max()) + 1 if labels is not None and len(labels) else 0
    if classes == 0:  # a features-only spec: size the classifier from the labels
        classes = top
    if top > classes:
        raise ValueError(f"labels go up to {top - 1} but the network has {classes} classes; pass num_classes")
    return classes


def score(name: str, spec: ArchSpec, images: torch.Tensor | None = None, labels: torch.Tensor | None = None, *,
          seed: int = 0, num_classes: int | None = None, resolution: int = 32,
          train_data: tuple[ArrayLike, ArrayLike] | None = None, test_data: tuple[ArrayLike, ArrayLike] | None = None,
          report: ReportFn | None = None, steps: int = 300, device: torch.device | str = "cpu") -> ProxyResult:
    """Score `spec` with the proxy `name`.

    Args:
        images, labels: the minibatch of ``naswot``, ``grad_norm``, ``snip``, ``zico``, ``meco``: float32
            ``[B, 3, R, R]`` normalised images (R = `resolution`) and int64 ``[B]`` labels. Ignored by the other
            proxies.
        seed: seeds the network's initialisation (and short training's data order); the caller's torch RNG state
            is restored afterwards.
        num_classes: classifier size; default the spec's head (or, for a features-only spec, the labels' max + 1).
        resolution: input size of ``flops`` and ``synflow``, and short training's (its data are resized to it).
        train_data, test_data: ``(x uint8 [N, H, W, 3], y int [N])`` splits for ``short_train``.
        report: ``report(step, accuracy) -> bool`` for ``short_train``'s intermediate accuracies; True stops.
        steps: ``short_train``'s number of steps (the rest of `TrainRecipe` is fixed).
        device: where the network runs.

    Raises:
        ProxyError: unknown name, data missing for a data proxy, or no finite value.
        ValueError: malformed images or labels.
    """
    proxy = PROXIES.get(name)
    if proxy is None:
        raise ProxyError(f"unknown proxy {name!r}; known proxies: {', '.join(PROXIES)}")
    has_data = (images is not None and labels is not None) if proxy.needs_minibatch else \
        (train_data is not None and test_data is not None)
    if proxy.needs_data and not has_data:
        raise ProxyError(f"proxy {name!r} needs data (--data); data-free proxies: {', '.join(DATA_FREE)}")
    device = torch.device(device)
    if proxy.needs_minibatch:
        _check_batch(images, labels, resolution)
        images, labels = images.to(device), labels.to(device)
    label_source = (labels if proxy.needs_minibatch else train_data[1]) if proxy.needs_data else None
    classes = _resolve_num_classes(spec, num_classes, label_source)

    def build() -> nn.Module:
        return build_model(spec, num_classes=classes).to(device)

    job = ProxyJob(spec=spec, build=build, resolution=resolution, seed=seed, device=device, images=images,
                   labels=labels, train_data=train_data, test_data=test_data, recipe=TrainRecipe(steps=steps),
                   report=report)
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.default_generator.manual_seed(seed)  # networks are initialised on the CPU, then moved
        if device.type == "cuda":
            with torch.cuda.device(device):
                torch.cuda.manual_seed(seed)
        start = time.perf_counter()
        value, details = proxy.fn(job)
        seconds = time.perf_counter() - start
    if not math.isfinite(value):
        raise ProxyError(f"proxy {name!r} gave {value} for {spec.name or spec.digest()}")
    _log.debug("proxy %s on %s: %.6g in %.3f s", name, spec.name or spec.digest(), value, seconds)
    return ProxyResult(name=name, value=float(value), seconds=seconds, details=details)
