"""`ImageData` (both splits in memory, uint8 NHWC) and what every reader shares: the held-out test split, the
per-class cap, resizing and the class count."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from common.errors import UserFacingError

__all__ = ["ImageData", "DataError", "HOLDOUT_FRACTION", "SEED", "assemble", "checked_class_names", "check_load_args",
           "resize_uint8", "select_splits", "source_line"]

logger = logging.getLogger(__name__)


HOLDOUT_FRACTION = 0.1
SEED = 0


class DataError(UserFacingError, ValueError):
    """The data at a path cannot be used; the message is one line naming the path and what is wrong."""


@dataclass(frozen=True, eq=False, repr=False)
class ImageData:
    """An image-classification data set in memory, both splits as uint8 NHWC images and int64 labels.

    Attributes:
        x_train: ``[N_train, H, W, 3]`` torch.uint8, RGB pixels 0..255.
        y_train: ``[N_train]`` torch.int64, labels in ``0..num_classes-1``.
        x_test: ``[N_test, H, W, 3]`` torch.uint8 (same H, W as train).
        y_test: ``[N_test]`` torch.int64.
        num_classes: K, the number of classes (some may have no images after subsampling).
        class_names: K names, index = label.
        source: what was loaded, e.g. ``"npz /data/x.npz (5000 train / 1000 test)"``.
    """

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    num_classes: int
    class_names: tuple[str, ...]
    source: str

    def __post_init__(self) -> None:
        if self.num_classes < 2 or len(self.class_names) != self.num_classes:
            raise ValueError(f"ImageData needs num_classes >= 2 and one name per class, got {self.num_classes} "
                             f"classes and {len(self.class_names)} names")
        for split in ("train", "test"):
            x, y = getattr(self, f"x_{split}"), getattr(self, f"y_{split}")
            if x.dtype != torch.uint8 or x.ndim != 4 or x.shape[-1] != 3:
                raise ValueError(f"ImageData x_{split} must be uint8 [N, H, W, 3], got {x.dtype} {tuple(x.shape)}")
            if y.dtype != torch.int64 or y.shape != (x.shape[0],):
                raise ValueError(f"ImageData y_{split} must be int64 [{x.shape[0]}], got {y.dtype} {tuple(y.shape)}")
            if y.numel() and (int(y.min()) < 0 or int(y.max()) >= self.num_classes):
                raise ValueError(f"ImageData y_{split} has labels outside 0..{self.num_classes - 1}")
        if self.x_train.shape[1:] != self.x_test.shape[1:]:
            raise ValueError(f"ImageData train and test images differ in size: {tuple(self.x_train.shape[1:])} "
                             f"vs {tuple(self.x_test.shape[1:])}")

    @property
    def image_size(self) -> tuple[int, int]:
        """(H, W) of the stored images, in pixels."""
        return int(self.x_train.shape[1]), int(self.x_train.shape[2])

    @property
    def num_train(self) -> int:
        """N_train, the number of training images."""
        return int(self.x_train.shape[0])

    @property
    def num_test(self) -> int:
        """N_test, the number of test images."""
        return int(self.x_test.shape[0])

    def __repr__(self) -> str:
        h, w = self.image_size
        return (f"ImageData({self.num_train} train / {self.num_test} test, {h}x{w}, {self.num_classes} classes, "
                f"source={self.source!r})")


def _stratified_holdout(labels: np.ndarray, fraction: float = HOLDOUT_FRACTION,
                        seed: int = SEED) -> tuple[np.ndarray, np.ndarray]:
    """Indices (train, test), each sorted: about `fraction` of every class with at least 2 images goes to test."""
    rng = np.random.default_rng(seed)
    test: list[np.ndarray] = []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        k = min(int(np.floor(len(idx) * fraction + 0.5)), len(idx) - 1)
        if len(idx) >= 2:
            k = max(k, 1)
        test.append(rng.permutation(idx)[:k])
    test_idx = np.sort(np.concatenate(test)) if test else np.zeros(0, dtype=np.int64)
    train_mask = np.ones(len(labels), dtype=bool)
    train_mask[test_idx] = False
    return np.flatnonzero(train_mask), test_idx


def _cap_per_class(labels: np.ndarray, max_per_class: int | None, seed: int = SEED) -> np.ndarray:
    """Sorted indices keeping at most `max_per_class` images of each class (all of them when None)."""
    if max_per_class is None:
        return np.arange(len(labels))
    rng = np.random.default_rng(seed)
    keep = [rng.permutation(np.flatnonzero(labels == c))[:max_per_class] for c in np.unique(labels)]
    return np.sort(np.concatenate(keep)) if keep else np.zeros(0, dtype=np.int64)


def check_load_args(resolution: int | None, max_per_class: int | None) -> None:
    for name, value in (("resolution", resolution), ("max_per_class", max_per_class)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise ValueError(f"{name} must be a positive integer or None, got {value!r}")


def resize_uint8(x: np.ndarray, resolution: int) -> np.ndarray:
    """``[N, H, W, 3]`` uint8 -> ``[N, resolution, resolution, 3]`` uint8, bilinear with antialiasing (like PIL)."""
    if x.shape[1] == resolution and x.shape[2] == resolution:
        return x
    out = np.empty((x.shape[0], resolution, resolution, 3), dtype=np.uint8)
    for start in range(0, x.shape[0], 512):
        chunk = torch.from_numpy(x[start:start + 512]).permute(0, 3, 1, 2).float()
        chunk = F.interpolate(chunk, size=(resolution, resolution), mode="bilinear", align_corners=False,
                              antialias=True)
        out[start:start + 512] = chunk.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()
    return out


def select_splits(y_train: np.ndarray, y_test: np.ndarray | None, max_per_class: int | None,
            path: Path) -> tuple[np.ndarray, np.ndarray, bool]:
    """Which images to keep: (train indices, test indices, held_out).

    Test indices point into the test split, or into train when there is none (``held_out``: a stratified 10% of
    train, seed 0, disjoint from the train indices). Both are then capped at `max_per_class` per class.
    """
    held_out = y_test is None
    if held_out:
        train_idx, test_idx = _stratified_holdout(y_train)
        if len(test_idx) == 0:
            raise DataError(f"{path}: no test split and too few images per class to hold one out "
                            f"(need at least 2 images of some class)")
        y_test = y_train[test_idx]
    else:
        train_idx, test_idx = np.arange(len(y_train)), np.arange(len(y_test))
    train_idx = train_idx[_cap_per_class(y_train[train_idx], max_per_class)]
    test_idx = test_idx[_cap_per_class(y_test, max_per_class)]  # y_test is aligned with test_idx here
    return train_idx, test_idx, held_out


def source_line(kind: str, path: Path, n_train: int, n_test: int, held_out: bool, resolution: int | None,
            max_per_class: int | None) -> str:
    """``"npz /data/x.npz (5000 train / 1000 test)"`` and the like, with what was held out, capped or resized."""
    notes = [f"{n_train} train / {n_test} test" + (" held out of train (stratified 10%, seed 0)" if held_out else "")]
    if max_per_class is not None:
        notes.append(f"at most {max_per_class} per class")
    if resolution is not None:
        notes.append(f"resized to {resolution}x{resolution}")
    return f"{kind} {path} ({', '.join(notes)})"


def assemble(kind: str, path: Path, x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray | None,
              y_test: np.ndarray | None, class_names: tuple[str, ...], resolution: int | None,
              max_per_class: int | None) -> ImageData:
    """Hold out a test split if there is none, subsample, resize, and wrap as `ImageData` (arrays: uint8 NHWC)."""
    train_idx, test_idx, held_out = select_splits(y_train, y_test, max_per_class, path)
    x_from, y_from = (x_train, y_train) if held_out or x_test is None or y_test is None else (x_test, y_test)
    x_test, y_test = x_from[test_idx], y_from[test_idx]
    x_train, y_train = x_train[train_idx], y_train[train_idx]
    if resolution is not None:
        x_train, x_test = resize_uint8(x_train, resolution), resize_uint8(x_test, resolution)
    elif x_train.shape[1:3] != x_test.shape[1:3]:
        raise DataError(f"{path}: train images are {x_train.shape[1]}x{x_train.shape[2]} but test images "
                        f"{x_test.shape[1]}x{x_test.shape[2]}; pass resolution= to resize both")
    data = ImageData(
        x_train=torch.from_numpy(np.ascontiguousarray(x_train)),
        y_train=torch.from_numpy(np.ascontiguousarray(y_train, dtype=np.int64)),
        x_test=torch.from_numpy(np.ascontiguousarray(x_test)),
        y_test=torch.from_numpy(np.ascontiguousarray(y_test, dtype=np.int64)),
        num_classes=len(class_names), class_names=class_names,
        source=source_line(kind, path, len(y_train), len(y_test), held_out, resolution, max_per_class),
    )
    logger.info("loaded %s", data.source)
    return data


def checked_class_names(path: Path, labels: list[np.ndarray], names: tuple[str, ...] | None) -> tuple[str, ...]:
    """Class names (given, or "0".."K-1" with K = max label + 1) after checking every label fits them. Without
    names, at least half of the K classes must have images: labels are 0..K-1, not arbitrary ids."""
    top = max(int(y.max()) for y in labels if y.size)
    if names is not None:
        if top >= len(names):
            raise DataError(f"{path}: label {top} is out of range for the {len(names)} class names given "
                            f"(labels must be 0..{len(names) - 1})")
    else:
        present = len(np.unique(np.concatenate(labels)))
        if top + 1 > 2 * present:
            raise DataError(f"{path}: label {top} makes {top + 1} classes but only {present} distinct labels have "
                            f"images; labels must be 0..K-1 (number the classes from 0)")
        names = tuple(str(i) for i in range(top + 1))
    if len(names) < 2:
        raise DataError(f"{path}: needs at least 2 classes, found {len(names)}")
    return names
