"""Accuracy proxies by name: zero-cost scores of an untrained network, and a short-training proxy.

Every proxy scores an `ArchSpec`; higher means predicted more accurate. `score(name, spec, ...)` is the entry point
the search calls: it builds a fresh network, seeds it, times the proxy and returns a `ProxyResult`; a proxy that
cannot give a finite value raises `ProxyError` (the search records the trial as failed with that message).

Proxies (``PROXIES``; ``DATA_FREE`` lists those that need no images):

- ``params``, ``flops``: baselines. FLOPs are multiply-adds of one ``resolution`` x ``resolution`` image, as
  `search_spaces.count_flops` counts them.
- ``synflow`` (Tanaka et al., 2020), data-free: on a float64 copy of the network in eval mode (BatchNorm uses its
  running statistics, so no batch statistics of a constant input) with every parameter replaced by its absolute
  value, ``L = sum(f(1))`` for an all-ones ``[1, 3, R, R]`` input; value ``log10(sum_theta |theta * dL/dtheta|)``
  (the log of the total, not a sum of per-layer logs: the total is the paper's score, the log only keeps its
  range readable).
- ``naswot`` (Mellor et al., 2021, "NASWOT: log|K_H|"): binary codes ``x > 0`` of every ``nn.ReLU`` and ``nn.GELU``
  output (timm's Mlp uses ``nn.GELU``; ``GELU(x) > 0`` iff ``x > 0``) over the minibatch, in train mode as the
  paper's code; ``K_H[i, j] = N_A - hamming(c_i, c_j)``; value ``logdet(K_H + I)``. The ridge of one count keeps
  the value finite when two inputs share a code (``K_H`` singular): ``K_H + I`` has every eigenvalue >= 1, so the
  value is >= 0, and for a fixed ``N_A`` its minimum, ``log(B * N_A + 1)``, is reached exactly when all inputs share
  one code. It is at most ``B * log(N_A + 1)`` (Hadamard). ``details`` gives ``units`` (N_A) and ``batch`` (B).
- ``swap`` (Peng et al., ICLR 2024, "SWAP-Score" without its size regulariser): the same binary codes as
  ``naswot``, read per unit instead of per input: each unit's pattern over the B inputs; value: the number of
  distinct patterns. The paper's code hooks ReLUs on 4-D feature maps only; here the token MLPs' GELUs count
  too, as for ``naswot``. ``details`` gives ``units``. At B = 64 nearly every unit has a pattern of its own, so
  the score is close to the count of activations (benchmarks/proxy_quality.py).
- ``grad_norm``: ``sum_theta ||dL/dtheta||_2`` after one cross-entropy backward on the minibatch (train mode).
- ``snip`` (Lee et al., 2019, as a proxy by Abdelfattah et al., 2021): ``sum |theta * dL/dtheta|``, same backward.
- ``zico`` (Li et al., 2023): the minibatch is split in `ZICO_SPLITS` parts, one backward each; for every parameter
  tensor ``l``, ``log(sum_theta mean_b|g| / std_b(g))`` over its entries whose gradient varies across the parts
  (population std, as the paper's code), summed over tensors; tensors with no varying entry are skipped. The
  paper's code takes Conv2d/Linear weights only; here every parameter tensor counts, so learned queries, position
  biases and norms of the attention mixers are scored too.
- ``meco`` (Jiang et al., NeurIPS 2023, "MeCo", its ``meco_opt`` variant): the minibatch runs forward in train
  mode; for every ``nn.Conv2d`` and token ``nn.Linear`` output, the first image's feature map as
  ``[C, positions]``, `MECO_CHANNELS` channels drawn at random (seeded), the smallest eigenvalue of their Pearson
  correlation matrix (NaN -> 0, as the paper's code) times ``C / MECO_CHANNELS``; value: the sum over layers.
  Layers with a single position are skipped. Where this departs from the paper's code: it hooks every module
  (norms, activations, whole blocks too), and samples the *tokens* of ``[B, N, C]`` outputs as its rows; here
  only the layers that compute features are hooked, and tokens are positions, as pixels are. The paper's full
  variant (all C channels) is degenerate here: at CIFAR scale nearly every layer has more channels than
  positions, its matrix is singular, and 27 of the 30 benchmark networks scored within 0.06 of 0
  (``meco_score(..., channels=None)``: Spearman -0.41 with trained accuracy where this variant scored 0.57,
  both before every network was trained twice; this variant 0.63 against the mean of two trainings,
  benchmarks/proxy_quality.py). ``details`` gives ``layers``.
- ``ranker``: a learned combination (`nas.ranker.Ranker`, ridge regression) of `ranker_features`: log FLOPs (the
  stored counts, as the ``flops`` lookup), log ``meco``, and AZ-NAS's expressivity, progressivity and trainability
  (`az_nas_components`), each on a network built afresh from the seed. The shipped fit (`nas.ranker.SHIPPED_RANKER`)
  rests on trained CIFAR-scale networks at 32 px (its ``fitted_on``; cross-validated in
  benchmarks/proxy_quality.py); elsewhere its ranking is an extrapolation. ``details`` gives the features.
- ``short_train``: `TrainRecipe` (AdamW, warmup + cosine, label smoothing; `nas.data.batches` with random crop +
  flip) for ``steps`` steps on the training split, then top-1 accuracy on the test split in [0, 1]; intermediate
  accuracies every ``report_every`` steps go to an optional ``report(step, accuracy) -> bool`` (True stops
  training: Optuna pruning).

The data proxies (``grad_norm``, ``snip``, ``zico``, ``naswot``, ``swap``, ``meco``) use the model they are given:
its mode, gradients and BatchNorm statistics change. `score` always hands them a freshly built network.
"""
from __future__ import annotations

import copy
import itertools
import logging
import math
import time
from dataclasses import dataclass, field
from typing import Callable, Iterator, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from latency_tables.block_costs import architecture_totals
from nas.data import batches
from nas.ranker import Ranker, load_ranker
from search_spaces import ArchSpec, build_model, module_flops

__all__ = [
    "ProxyError", "ProxyResult", "Proxy", "ProxyJob", "TrainRecipe", "PROXIES", "DATA_FREE", "score",
    "synflow_score", "naswot_score", "grad_norm_score", "snip_score", "zico_score", "meco_score", "short_train",
    "ZICO_SPLITS", "MECO_CHANNELS", "ReportFn", "az_nas_components", "LOOKUPS", "lookup_score", "RANKER_FEATURES",
    "ranker_features",
]

_log = logging.getLogger(__name__)

ZICO_SPLITS = 2  # minibatches per ZiCo score, as the paper's code (two batches)
MECO_CHANNELS = 8  # channels per layer MeCo correlates, as the paper's meco_opt

ModelFactory = Callable[[], nn.Module]
ReportFn = Callable[[int, float], bool]
ArrayLike = Union[torch.Tensor, np.ndarray]


class ProxyError(RuntimeError):
    """A proxy could not produce a finite score (or lacks the data it needs); the message says why."""


@dataclass(frozen=True)
class ProxyResult:
    """One proxy evaluation: `value` (higher = predicted better), wall time in `seconds`, and proxy `details`."""
    name: str
    value: float
    seconds: float
    details: dict = field(default_factory=dict)


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


@dataclass(frozen=True)
class Proxy:
    """A named proxy: ``fn(job) -> (value, details)``. `kind`: ``lookup`` (a sum of stored block counts: the
    search computes it where it looks latencies up, with no worker), ``zero_cost`` (one pass over a minibatch of
    an untrained network) or ``training``."""
    name: str
    needs_data: bool
    description: str
    fn: Callable[[ProxyJob], tuple[float, dict]]
    kind: str = "zero_cost"


# ------------------------------------------------------------------------------------------------------ helpers
def _check_finite_output(output: torch.Tensor, proxy: str) -> None:
    if not torch.isfinite(output).all():
        raise ProxyError(f"{proxy}: the network's output is not finite (NaN or inf) on this input")


def _cross_entropy_backward(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, proxy: str) -> None:
    model.train()
    model.zero_grad(set_to_none=True)
    logits = model(images)
    _check_finite_output(logits, proxy)
    F.cross_entropy(logits, labels).backward()


def _with_grads(model: nn.Module) -> list[tuple[str, nn.Parameter]]:
    return [(name, p) for name, p in model.named_parameters() if p.grad is not None]


# ------------------------------------------------------------------------------------------------- zero-cost
def synflow_score(model: nn.Module, input_shape: tuple[int, ...]) -> float:
    """SynFlow of `model` for an all-ones input of `input_shape` (``[1, 3, R, R]``): ``log10(sum |theta * g|)``.

    Runs on a float64 deep copy with absolute parameters in eval mode; `model` itself is left unchanged.
    """
    net = copy.deepcopy(model).double().eval()
    with torch.no_grad():
        for p in net.parameters():
            p.abs_()
    net.zero_grad(set_to_none=True)
    device = next(net.parameters()).device
    output = net(torch.ones(input_shape, dtype=torch.float64, device=device))
    _check_finite_output(output, "synflow")
    output.sum().backward()
    total = sum((p.detach() * p.grad).abs().sum() for _, p in _with_grads(net))
    total = float(total)
    if not math.isfinite(total) or total <= 0:
        raise ProxyError(f"synflow: sum |theta * grad| is {total}; no finite positive saliency to take a log of")
    return math.log10(total)


def naswot_score(model: nn.Module, images: torch.Tensor) -> tuple[float, int]:
    """NASWOT ``logdet(K_H + I)`` of `model` on `images` ``[B, 3, R, R]``; returns (score, N_A units hooked)."""
    batch = images.shape[0]
    kernel = torch.zeros(batch, batch, dtype=torch.float64, device=images.device)
    units = 0
    for layer_codes in _activation_codes(model, images, "naswot"):
        codes = layer_codes.to(torch.float64)
        kernel += codes @ codes.T + (1.0 - codes) @ (1.0 - codes).T
        units += codes.shape[1]
    sign, logdet = torch.linalg.slogdet(kernel + torch.eye(batch, dtype=torch.float64, device=kernel.device))
    if sign.item() <= 0 or not math.isfinite(logdet.item()):
        raise ProxyError(f"naswot: K_H + I has sign {sign.item()} and log|det| {logdet.item()}")
    return logdet.item(), units


def _activation_codes(model: nn.Module, images: torch.Tensor, proxy: str) -> Iterator[torch.Tensor]:
    """Forward `images` ``[B, 3, R, R]`` in train mode; yields each ReLU/GELU output's codes ``x > 0`` as a bool
    ``[B, units]`` tensor, in the order the modules ran."""
    batch, codes = images.shape[0], []

    def hook(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
        if output.shape[0] != batch:
            raise ProxyError(f"{proxy}: {type(module).__name__} output has leading dim {output.shape[0]}, not the "
                             f"batch {batch}; its units cannot be assigned to inputs")
        codes.append((output.detach() > 0).reshape(batch, -1))

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, (nn.ReLU, nn.GELU))]
    if not handles:
        raise ProxyError(f"{proxy}: the network has no nn.ReLU or nn.GELU module to take activation codes from")
    try:
        model.train()
        with torch.no_grad():
            output = model(images)
    finally:
        for handle in handles:
            handle.remove()
    _check_finite_output(output, proxy)
    yield from codes


def swap_score(model: nn.Module, images: torch.Tensor) -> tuple[float, int]:
    """SWAP: the number of distinct per-unit activation patterns over `images` ``[B, 3, R, R]``; returns (score,
    units). Patterns are packed 62 inputs to an int64 word, so counting them is one `torch.unique` over words."""
    codes = torch.cat(list(_activation_codes(model, images, "swap")), dim=1).T  # [units, B]
    weights = 2 ** torch.arange(62, dtype=torch.int64, device=codes.device)
    words = torch.stack([(chunk.long() * weights[:chunk.shape[1]]).sum(dim=1) for chunk in codes.split(62, dim=1)],
                        dim=1)  # [units, ceil(B / 62)]
    # one word a unit (B <= 62): a flat unique, ~50x quicker at 224x224 than the row-wise one
    distinct = torch.unique(words[:, 0]) if words.shape[1] == 1 else torch.unique(words, dim=0)
    return float(distinct.shape[0]), codes.shape[0]


def grad_norm_score(model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> float:
    """``sum_theta ||dL/dtheta||_2`` after one cross-entropy backward on (`images`, `labels`), train mode."""
    _cross_entropy_backward(model, images, labels, "grad_norm")
    return float(sum(p.grad.detach().double().norm() for _, p in _with_grads(model)))


def snip_score(model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> float:
    """SNIP saliency ``sum |theta * dL/dtheta|`` after one cross-entropy backward, train mode."""
    _cross_entropy_backward(model, images, labels, "snip")
    return float(sum((p.detach().double() * p.grad.double()).abs().sum() for _, p in _with_grads(model)))


def zico_score(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, splits: int = ZICO_SPLITS) -> float:
    """ZiCo: ``sum_l log(sum_theta mean_b|g| / std_b(g))`` over `splits` parts of the minibatch (module docstring)."""
    if images.shape[0] < 2 * splits:
        raise ValueError(f"zico needs at least {2 * splits} images ({splits} parts of 2), got {images.shape[0]}")
    grads: dict[str, list[torch.Tensor]] = {}
    for part_images, part_labels in zip(images.chunk(splits), labels.chunk(splits)):
        _cross_entropy_backward(model, part_images, part_labels, "zico")
        for name, p in _with_grads(model):
            grads.setdefault(name, []).append(p.grad.detach().flatten().double().clone())
    total = 0.0
    for per_part in grads.values():
        if len(per_part) < 2:
            continue
        stacked = torch.stack(per_part)  # [parts, entries]
        # population std by hand: Tensor.std over a short dim 0 is ~20x slower here (1.8 ms a tensor)
        std = (stacked - stacked.mean(dim=0)).square().mean(dim=0).sqrt()
        varying = std > 0
        ratio_sum = (stacked.abs().mean(dim=0)[varying] / std[varying]).sum().item()
        if ratio_sum > 0:
            total += math.log(ratio_sum)
    return total


def meco_score(model: nn.Module, images: torch.Tensor, channels: int | None = None) -> tuple[float, int]:
    """MeCo of `model` on `images` ``[B, 3, R, R]``; returns (score, layers counted). `channels`: how many channels
    of each layer to correlate, drawn from the global RNG (``meco_opt``; module docstring), None for all of them.
    """
    eigenvalues: list[torch.Tensor] = []

    def conv_hook(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
        add(output.detach()[0].flatten(1))  # [C, H*W] of the first image

    def linear_hook(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
        if output.ndim >= 3:  # tokens [..., C] of the first image; the classifier's [B, classes] has none
            add(output.detach()[0].reshape(-1, output.shape[-1]).T)

    def add(feature: torch.Tensor) -> None:  # [C, positions]
        count = feature.shape[0]
        if feature.shape[1] < 2 or count < 2:
            return
        scale = 1.0
        if channels is not None and count > channels:
            feature, scale = feature[torch.randperm(count)[:channels]], count / channels
        correlation = torch.corrcoef(feature.double()).nan_to_num(nan=0.0, posinf=0.0, neginf=0.0)
        eigenvalues.append(torch.linalg.eigvalsh(correlation)[0] * scale)

    handles = [m.register_forward_hook(conv_hook) for m in model.modules() if isinstance(m, nn.Conv2d)]
    handles += [m.register_forward_hook(linear_hook) for m in model.modules() if isinstance(m, nn.Linear)]
    try:
        model.train()
        with torch.no_grad():
            _check_finite_output(model(images), "meco")
    finally:
        for handle in handles:
            handle.remove()
    if not eigenvalues:
        raise ProxyError("meco: no Conv2d or token Linear output with at least 2 positions and 2 channels")
    return float(torch.stack(eigenvalues).sum()), len(eigenvalues)


def az_nas_components(model: nn.Module, images: torch.Tensor) -> dict[str, float]:
    """AZ-NAS's per-network scores (Lee & Ham, CVPR 2024) on `images` ``[B, 3, R, R]``, train mode.

    Features are the stem's and every block's outputs, as ``[B*H*W, C]``. ``expressivity``: sum over features of
    the entropy of the normalised eigenvalues of their channel covariance; ``progressivity``: the smallest
    increase of that entropy from one feature to the next; ``trainability``: mean over consecutive pairs of
    ``2 - s - 1/s``, with ``s`` the top singular value of ``E[g_in g_out^T]`` for random +-1 ``g_out``
    backpropagated from one feature to the previous (pixel-unshuffled where the resolution halves). AZ-NAS ranks
    these, with FLOPs, over a population and sums the log relative ranks: not a score of one network alone, so
    it is not in `PROXIES` (benchmarks/proxy_quality.py ranks it over the benchmark's networks).
    """
    features: list[torch.Tensor] = []
    modules = [model.stem] + [block for stage in model.stages for block in stage.blocks]
    handles = [m.register_forward_hook(lambda module, inputs, output: features.append(output)) for m in modules]
    try:
        model.train()
        _check_finite_output(model(images), "az_nas")
    finally:
        for handle in handles:
            handle.remove()
    as_nhwc = [features[0].permute(0, 2, 3, 1)] + features[1:]  # the stem is NCHW, blocks NHWC
    entropies = []
    for feature in as_nhwc:
        flat = feature.detach().reshape(-1, feature.shape[-1]).double()
        flat = flat - flat.mean(dim=0, keepdim=True)
        eigenvalues = torch.linalg.eigvalsh(flat.T @ flat / flat.shape[0]).clamp_min(0)
        p = eigenvalues / eigenvalues.sum()
        entropies.append(float(-(p * torch.log(p + 1e-8)).sum()))
    trainability = []
    for i in reversed(range(1, len(features))):
        g_out = torch.randint(0, 2, features[i].shape, dtype=features[i].dtype) * 2 - 1
        g_in = torch.autograd.grad(features[i], features[i - 1], g_out, retain_graph=True)[0]
        g_in = g_in.permute(0, 2, 3, 1) if i == 1 else g_in
        if g_in.shape[1] != g_out.shape[1]:  # a transition reduced the resolution: stack each patch
            stride = -(-g_in.shape[1] // g_out.shape[1])  # 7 -> 4 is a stride-2 transition with padding
            pad = g_out.shape[1] * stride - g_in.shape[1]
            g_in = F.pad(g_in.permute(0, 3, 1, 2), (0, pad, 0, pad))
            g_in = F.pixel_unshuffle(g_in, stride).permute(0, 2, 3, 1)
        g_in, g_out = g_in.reshape(-1, g_in.shape[-1]).double(), g_out.reshape(-1, g_out.shape[-1]).double()
        top = torch.linalg.svdvals(g_in.T @ g_out / g_out.shape[0]).max().item()
        trainability.append(2 - top - 1 / (top + 1e-6))
    if len(entropies) < 2:
        raise ProxyError("az_nas: progressivity needs the stem and at least one block")
    values = {"expressivity": sum(entropies), "progressivity": min(b - a for a, b in zip(entropies, entropies[1:])),
              "trainability": float(np.mean(trainability))}
    if not all(math.isfinite(v) for v in values.values()):
        raise ProxyError(f"az_nas: non-finite components {values}")
    return values


# ------------------------------------------------------------------------------------------------ short training
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


# ------------------------------------------------------------------------------------------------- registry
def _params(job: ProxyJob) -> tuple[float, dict]:
    return float(sum(p.numel() for p in job.build().parameters())), {}


def _flops(job: ProxyJob) -> tuple[float, dict]:
    model = job.build()
    image = torch.zeros(1, 3, job.resolution, job.resolution, device=next(model.parameters()).device)
    return float(module_flops(model, image)), {"resolution": job.resolution}


def _synflow(job: ProxyJob) -> tuple[float, dict]:
    return synflow_score(job.build(), (1, 3, job.resolution, job.resolution)), {"resolution": job.resolution}


def _naswot(job: ProxyJob) -> tuple[float, dict]:
    value, units = naswot_score(job.build(), job.images)
    return value, {"units": units, "batch": int(job.images.shape[0])}


def _swap(job: ProxyJob) -> tuple[float, dict]:
    value, units = swap_score(job.build(), job.images)
    return value, {"units": units, "batch": int(job.images.shape[0])}


def _grad_norm(job: ProxyJob) -> tuple[float, dict]:
    return grad_norm_score(job.build(), job.images, job.labels), {}


def _snip(job: ProxyJob) -> tuple[float, dict]:
    return snip_score(job.build(), job.images, job.labels), {}


def _zico(job: ProxyJob) -> tuple[float, dict]:
    return zico_score(job.build(), job.images, job.labels), {"splits": ZICO_SPLITS}


def _meco(job: ProxyJob) -> tuple[float, dict]:
    value, layers = meco_score(job.build(), job.images, channels=MECO_CHANNELS)
    return value, {"layers": layers}


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


def _ranker(job: ProxyJob) -> tuple[float, dict]:
    if not _shipped_ranker:
        _shipped_ranker.append(load_ranker())
    ranker = _shipped_ranker[0]
    features = ranker_features(job.spec, job.build, job.images, job.resolution, job.seed)
    return ranker.predict(features), {"features": features, "fitted_on": ranker.fitted_on}


def _short_train(job: ProxyJob) -> tuple[float, dict]:
    return short_train(job.build(), job.train_data, job.test_data, job.recipe, seed=job.seed, report=job.report,
                       resolution=job.resolution)


PROXIES: dict[str, Proxy] = {p.name: p for p in (
    Proxy("params", False, "number of parameters (baseline)", _params, kind="lookup"),
    Proxy("flops", False, "multiply-adds of one image at the given resolution (baseline)", _flops, kind="lookup"),
    Proxy("synflow", False, "log10 synaptic flow of |theta| on an all-ones input (Tanaka et al., 2020)", _synflow),
    Proxy("naswot", True, "log|K_H + I| of ReLU/GELU activation codes (Mellor et al., 2021)", _naswot),
    Proxy("swap", True, "distinct per-unit ReLU/GELU activation patterns over the minibatch (Peng et al., 2024)",
          _swap),
    Proxy("grad_norm", True, "sum of gradient L2 norms after one cross-entropy backward", _grad_norm),
    Proxy("snip", True, "sum |theta * grad| after one cross-entropy backward (SNIP)", _snip),
    Proxy("zico", True, "sum over tensors of log(sum mean|g| / std g) across minibatches (Li et al., 2023)", _zico),
    Proxy("meco", True, f"sum of the smallest eigenvalues of {MECO_CHANNELS}-channel correlations of one image "
          "(Jiang et al., 2023)", _meco),
    Proxy("ranker", True, "ridge regression of trained top-1 on log FLOPs, log MeCo and AZ-NAS's components "
          "(shipped fit: CIFAR-scale networks)", _ranker),
    Proxy("short_train", True, "test top-1 after a few hundred training steps (TrainRecipe)", _short_train,
          kind="training"),
)}
DATA_FREE: tuple[str, ...] = tuple(name for name, proxy in PROXIES.items() if not proxy.needs_data)
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


# ------------------------------------------------------------------------------------------------ entry point
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
    has_data = (train_data is not None and test_data is not None) if name == "short_train" else \
        (images is not None and labels is not None)
    if proxy.needs_data and not has_data:
        raise ProxyError(f"proxy {name!r} needs data (--data); data-free proxies: {', '.join(DATA_FREE)}")
    device = torch.device(device)
    if proxy.needs_data and name != "short_train":
        _check_batch(images, labels, resolution)
        images, labels = images.to(device), labels.to(device)
    label_source = (train_data[1] if name == "short_train" else labels) if proxy.needs_data else None
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
