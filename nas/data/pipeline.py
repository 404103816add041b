"""Minibatches for the proxies: uint8 NHWC images to normalised float32 NCHW, resized, shuffled and augmented."""
from __future__ import annotations

from typing import Iterator

import torch
import torch.nn.functional as F


__all__ = ["batches", "IMAGENET_MEAN", "IMAGENET_STD"]


IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _augment(x: torch.Tensor, generator: torch.Generator, padding: int = 4) -> torch.Tensor:
    """Random crop after zero `padding` pixels each side, then horizontal flip with p=0.5; ``[B, C, H, W]``."""
    b, _, h, w = x.shape
    padded = F.pad(x, (padding, padding, padding, padding))
    top = torch.randint(0, 2 * padding + 1, (b,), generator=generator)
    left = torch.randint(0, 2 * padding + 1, (b,), generator=generator)
    rows = (top[:, None] + torch.arange(h))[:, :, None]  # [B, H, 1]
    cols = (left[:, None] + torch.arange(w))[:, None, :]  # [B, 1, W]
    out = padded[torch.arange(b)[:, None, None], :, rows, cols]  # [B, H, W, C]
    out = out.permute(0, 3, 1, 2)
    flip = torch.rand(b, generator=generator) < 0.5
    return torch.where(flip[:, None, None, None], out.flip(3), out).contiguous()


def batches(x: torch.Tensor, y: torch.Tensor, batch_size: int, resolution: int, *, shuffle: bool, seed: int,
            augment: bool = False) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """One epoch of normalised minibatches, each image exactly once (the last batch may be smaller).

    Args:
        x: uint8 ``[N, H, W, 3]`` images (as in `ImageData`).
        y: int64 ``[N]`` labels.
        batch_size: images per batch (B).
        resolution: output side R in pixels; images are resized (bilinear, no antialias) when ``H, W != R``.
        shuffle: visit the images in a random order (from `seed`) instead of stored order.
        seed: seeds a private ``torch.Generator`` for the order and the augmentation; the global RNG is untouched.
        augment: random crop with 4-pixel zero padding + horizontal flip, after resizing.

    Yields:
        ``(images, labels)``: float32 ``[B, 3, R, R]`` normalised with the ImageNet mean/std, and int64 ``[B]``,
        on the CPU.
    """
    if x.dtype != torch.uint8 or x.ndim != 4 or x.shape[-1] != 3:
        raise ValueError(f"batches: x must be uint8 [N, H, W, 3], got {x.dtype} {tuple(x.shape)}")
    if y.ndim != 1 or y.shape[0] != x.shape[0]:
        raise ValueError(f"batches: y must be [{x.shape[0]}] labels, got {tuple(y.shape)}")
    for name, value in (("batch_size", batch_size), ("resolution", resolution)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"batches: {name} must be a positive integer, got {value!r}")
    return _batches(x, y, batch_size, resolution, shuffle, seed, augment)


def _batches(x: torch.Tensor, y: torch.Tensor, batch_size: int, resolution: int, shuffle: bool, seed: int,
             augment: bool) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    generator = torch.Generator().manual_seed(seed)
    n = x.shape[0]
    order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    for start in range(0, n, batch_size):
        idx = order[start:start + batch_size]
        xb = x[idx].permute(0, 3, 1, 2).float().div_(255.0)  # [B, 3, H, W] in 0..1
        if xb.shape[-2:] != (resolution, resolution):
            xb = F.interpolate(xb, size=(resolution, resolution), mode="bilinear", align_corners=False,
                               antialias=False)
        if augment:
            xb = _augment(xb, generator)
        yield ((xb - mean) / std).contiguous(), y[idx].long()
