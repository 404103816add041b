"""The training proxy: a short training run of the network on the data's splits.

- ``short_train``: `TrainRecipe` (AdamW, warmup + cosine, label smoothing; `nas.data.batches` with random crop +
  flip) for ``steps`` steps on the training split, then top-1 accuracy on the test split in [0, 1]; intermediate
  accuracies every ``report_every`` steps go to an optional ``report(step, accuracy) -> bool`` (True stops
  training: Optuna pruning).
"""
from __future__ import annotations

import itertools
import logging
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Iterator, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from nas.data import batches
from nas.proxies.registry import ProxyError

if TYPE_CHECKING:
    from nas.proxies.scoring import ProxyJob

__all__ = ["TrainRecipe", "short_train", "ReportFn", "ArrayLike"]

_log = logging.getLogger(__name__)
ReportFn = Callable[[int, float], bool]
ArrayLike = Union[torch.Tensor, np.ndarray]


@dataclass(frozen=True)
class TrainRecipe:
    """The short-training proxy's fixed recipe. ``warmup_steps`` is capped at half of ``steps``; weight decay
    applies to weights with two or more dimensions only (not to biases, norms, scales), as timm does."""
    steps: int = 300
    batch_size: int = 128
    lr: float = 2e-3
    weight_decay: float = 0.05
    warmup_steps: int = 20
    label_smoothing: float = 0.1
    report_every: int = 100
    eval_batch_size: int = 500


def _as_split(data: tuple[ArrayLike, ArrayLike], which: str) -> tuple[torch.Tensor, torch.Tensor]:
    x, y = (torch.as_tensor(a) for a in data)
    if x.dtype != torch.uint8 or x.ndim != 4 or x.shape[-1] != 3:
        raise ValueError(f"short_train: {which} images must be uint8 [N, H, W, 3]; got {x.dtype} {list(x.shape)}")
    if y.ndim != 1 or y.shape[0] != x.shape[0] or y.dtype.is_floating_point:
        raise ValueError(f"short_train: {which} labels must be integer [{x.shape[0]}]; got {y.dtype} {list(y.shape)}")
    if x.shape[0] == 0:
        raise ValueError(f"short_train: the {which} split is empty")
    return x, y.to(torch.int64)


def _accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int, resolution: int) -> float:
    model.eval()
    device = next(model.parameters()).device
    correct = 0
    with torch.no_grad():
        for images, labels in batches(x, y, batch_size, resolution, shuffle=False, seed=0):
            correct += int((model(images.to(device)).argmax(dim=1).cpu() == labels).sum())
    model.train()
    return correct / x.shape[0]


def _training_batches(x: torch.Tensor, y: torch.Tensor, batch_size: int, resolution: int,
                      seed: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Endless augmented, shuffled full batches (a new order each epoch; an epoch's last partial batch dropped)."""
    for epoch in itertools.count():
        for images, labels in batches(x, y, batch_size, resolution, shuffle=True, seed=seed + 7919 * epoch,
                                      augment=True):
            if images.shape[0] == batch_size:
                yield images, labels


def _lr_at(step: int, recipe: TrainRecipe) -> float:
    """Linear warmup to ``lr`` (capped at half the steps), then cosine to 0; `step` counts from 0."""
    warmup = min(recipe.warmup_steps, recipe.steps // 2)
    if step < warmup:
        return recipe.lr * (step + 1) / warmup
    progress = (step - warmup) / max(1, recipe.steps - warmup)
    return 0.5 * recipe.lr * (1.0 + math.cos(math.pi * progress))


def short_train(model: nn.Module, train_data: tuple[ArrayLike, ArrayLike], test_data: tuple[ArrayLike, ArrayLike],
                recipe: TrainRecipe = TrainRecipe(), *, seed: int = 0, report: ReportFn | None = None,
                resolution: int | None = None) -> tuple[float, dict]:
    """Train `model` with `recipe` and return (test top-1 accuracy in [0, 1], details).

    `train_data`/`test_data` are ``(x uint8 [N, H, W, 3], y int [N])``, normalised here with ImageNet mean/std and
    resized to `resolution` if given and different. Data order and augmentation come from a generator seeded with
    `seed`; the model's initialisation is the caller's. Every ``report_every`` steps (and at the end) the test
    accuracy goes to ``report(step, accuracy)``; True stops training early (``details['stopped_early']``) and the
    value is that accuracy. Raises `ProxyError` when the loss stops being finite.
    """
    if recipe.steps < 1 or recipe.batch_size < 1 or recipe.report_every < 1:
        raise ValueError(f"short_train: steps, batch_size and report_every must be >= 1; got {recipe}")
    device = next(model.parameters()).device
    x_train, y_train = _as_split(train_data, "train")
    x_test, y_test = _as_split(test_data, "test")
    resolution = resolution or x_train.shape[1]
    decay = [p for p in model.parameters() if p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.ndim < 2]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": recipe.weight_decay},
                                   {"params": no_decay, "weight_decay": 0.0}], lr=recipe.lr)
    batch_size = min(recipe.batch_size, x_train.shape[0])
    stream = _training_batches(x_train, y_train, batch_size, resolution, seed)
    history: list[list[float]] = []
    stopped_early, loss_value, step = False, float("nan"), 0
    model.train()
    for step in range(1, recipe.steps + 1):
        images, labels = next(stream)
        images, labels = images.to(device), labels.to(device)
        for group in optimizer.param_groups:
            group["lr"] = _lr_at(step - 1, recipe)
        loss = F.cross_entropy(model(images), labels, label_smoothing=recipe.label_smoothing)
        loss_value = loss.item()
        if not math.isfinite(loss_value):
            raise ProxyError(f"short_train: the loss is {loss_value} at step {step}; training diverged")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if step % recipe.report_every == 0 or step == recipe.steps:
            accuracy = _accuracy(model, x_test, y_test, recipe.eval_batch_size, resolution)
            history.append([step, accuracy])
            _log.debug("short_train: step %d, loss %.4f, test accuracy %.4f", step, loss_value, accuracy)
            if report is not None and report(step, accuracy) and step < recipe.steps:
                stopped_early = True
                break
    details = {"steps": step, "accuracies": history, "stopped_early": stopped_early, "final_loss": loss_value,
               "train_images": int(x_train.shape[0]), "test_images": int(x_test.shape[0])}
    return history[-1][1], details


def short_train_proxy(job: ProxyJob) -> tuple[float, dict]:
    return short_train(job.build(), job.train_data, job.test_data, job.recipe, seed=job.seed, report=job.report,
                       resolution=job.resolution)
