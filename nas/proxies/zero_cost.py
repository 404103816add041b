"""Zero-cost proxies: one pass over a minibatch of an untrained network.

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

These proxies use the model they are given: its mode, gradients and BatchNorm statistics change. `score` always
hands them a freshly built network.
"""
from __future__ import annotations

import copy
import math
from typing import TYPE_CHECKING, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from nas.proxies.registry import MECO_CHANNELS, ZICO_SPLITS, ProxyError

if TYPE_CHECKING:
    from nas.proxies.scoring import ProxyJob

__all__ = ["synflow_score", "naswot_score", "swap_score", "grad_norm_score", "snip_score", "zico_score", "meco_score",
           "az_nas_components"]


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


# ------------------------------------------------------------------------------------------------- as proxies
def synflow_proxy(job: ProxyJob) -> tuple[float, dict]:
    return synflow_score(job.build(), (1, 3, job.resolution, job.resolution)), {"resolution": job.resolution}


def naswot_proxy(job: ProxyJob) -> tuple[float, dict]:
    value, units = naswot_score(job.build(), job.images)
    return value, {"units": units, "batch": int(job.images.shape[0])}


def swap_proxy(job: ProxyJob) -> tuple[float, dict]:
    value, units = swap_score(job.build(), job.images)
    return value, {"units": units, "batch": int(job.images.shape[0])}


def grad_norm_proxy(job: ProxyJob) -> tuple[float, dict]:
    return grad_norm_score(job.build(), job.images, job.labels), {}


def snip_proxy(job: ProxyJob) -> tuple[float, dict]:
    return snip_score(job.build(), job.images, job.labels), {}


def zico_proxy(job: ProxyJob) -> tuple[float, dict]:
    return zico_score(job.build(), job.images, job.labels), {"splits": ZICO_SPLITS}


def meco_proxy(job: ProxyJob) -> tuple[float, dict]:
    value, layers = meco_score(job.build(), job.images, channels=MECO_CHANNELS)
    return value, {"layers": layers}
