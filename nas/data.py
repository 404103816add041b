"""User image-classification data for the accuracy proxies: loading (`load_data`) and minibatches (`batches`).

``load_data(path)`` reads one of three formats, chosen from what `path` is:

- an ``.npz`` with ``x_train`` (uint8 ``[N, H, W, 3]``, or grayscale ``[N, H, W]``), ``y_train`` (integers
  ``0..K-1``), optionally ``x_test`` / ``y_test`` and ``classes`` (string array). Loaded without pickle: a file
  whose arrays need pickle (object arrays) is refused.
- a CIFAR-10 python batch folder (``data_batch_1..5``, ``test_batch``, ``batches.meta``, as in
  ``cifar-10-batches-py``). Those files are pickles; they are read by an unpickler that only rebuilds numpy arrays
  and builtin containers, so a malicious file cannot run code.
- an ImageFolder directory, ``root/<class>/<image>`` or ``root/train/<class>/...`` with ``root/val/<class>/...``
  (or ``test``): decoded with PIL as RGB, classes sorted alphabetically, hidden files skipped.

Without a test split, a stratified 10% of train is held out (seed 0). Everything is deterministic. Images stay
uint8 NHWC in memory; `batches` turns them into normalised float32 NCHW minibatches.
"""
from __future__ import annotations

import builtins
import codecs
import importlib
import logging
import os
import pickle
import zipfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
import torch.nn.functional as F

from common.errors import UserFacingError

__all__ = ["ImageData", "DataError", "load_data", "batches", "IMAGENET_MEAN", "IMAGENET_STD"]

logger = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

HOLDOUT_FRACTION = 0.1
SEED = 0
IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm"})
TEST_SPLIT_NAMES = ("val", "test")  # ImageFolder: the first one present is the test split
CIFAR_MARKERS = ("data_batch_1", "batches.meta", "test_batch")


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


# --------------------------------------------------------------------------------------------------- splitting


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


def _check_args(resolution: int | None, max_per_class: int | None) -> None:
    for name, value in (("resolution", resolution), ("max_per_class", max_per_class)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise ValueError(f"{name} must be a positive integer or None, got {value!r}")


def _resize_uint8(x: np.ndarray, resolution: int) -> np.ndarray:
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


def _select(y_train: np.ndarray, y_test: np.ndarray | None, max_per_class: int | None,
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


def _source(kind: str, path: Path, n_train: int, n_test: int, held_out: bool, resolution: int | None,
            max_per_class: int | None) -> str:
    """``"npz /data/x.npz (5000 train / 1000 test)"`` and the like, with what was held out, capped or resized."""
    notes = [f"{n_train} train / {n_test} test" + (" held out of train (stratified 10%, seed 0)" if held_out else "")]
    if max_per_class is not None:
        notes.append(f"at most {max_per_class} per class")
    if resolution is not None:
        notes.append(f"resized to {resolution}x{resolution}")
    return f"{kind} {path} ({', '.join(notes)})"


def _assemble(kind: str, path: Path, x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray | None,
              y_test: np.ndarray | None, class_names: tuple[str, ...], resolution: int | None,
              max_per_class: int | None) -> ImageData:
    """Hold out a test split if there is none, subsample, resize, and wrap as `ImageData` (arrays: uint8 NHWC)."""
    train_idx, test_idx, held_out = _select(y_train, y_test, max_per_class, path)
    x_from, y_from = (x_train, y_train) if held_out or x_test is None or y_test is None else (x_test, y_test)
    x_test, y_test = x_from[test_idx], y_from[test_idx]
    x_train, y_train = x_train[train_idx], y_train[train_idx]
    if resolution is not None:
        x_train, x_test = _resize_uint8(x_train, resolution), _resize_uint8(x_test, resolution)
    elif x_train.shape[1:3] != x_test.shape[1:3]:
        raise DataError(f"{path}: train images are {x_train.shape[1]}x{x_train.shape[2]} but test images "
                        f"{x_test.shape[1]}x{x_test.shape[2]}; pass resolution= to resize both")
    data = ImageData(
        x_train=torch.from_numpy(np.ascontiguousarray(x_train)),
        y_train=torch.from_numpy(np.ascontiguousarray(y_train, dtype=np.int64)),
        x_test=torch.from_numpy(np.ascontiguousarray(x_test)),
        y_test=torch.from_numpy(np.ascontiguousarray(y_test, dtype=np.int64)),
        num_classes=len(class_names), class_names=class_names,
        source=_source(kind, path, len(y_train), len(y_test), held_out, resolution, max_per_class),
    )
    logger.info("loaded %s", data.source)
    return data


def _num_classes(path: Path, labels: list[np.ndarray], names: tuple[str, ...] | None) -> tuple[str, ...]:
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


# --------------------------------------------------------------------------------------------------------- npz


def _npz_images(path: Path, key: str, x: np.ndarray) -> np.ndarray:
    """Check an npz image array and return it as uint8 ``[N, H, W, 3]`` (grayscale repeated to 3 channels)."""
    if x.dtype != np.uint8:
        raise DataError(f"{path}: {key} has dtype {x.dtype}; expected uint8 pixels 0..255 "
                        f"(convert with (x * 255).round().astype(np.uint8) if it holds floats in 0..1)")
    if x.ndim == 3:
        x = x[..., None]
    if x.ndim != 4 or x.shape[-1] not in (1, 3):
        hint = "; it looks channels-first, transpose to NHWC" if x.ndim == 4 and x.shape[1] in (1, 3) else ""
        raise DataError(f"{path}: {key} has shape {tuple(x.shape)}; expected [N, H, W, 3] or grayscale "
                        f"[N, H, W]{hint}")
    if x.shape[0] == 0:
        raise DataError(f"{path}: {key} holds no images")
    return np.repeat(x, 3, axis=-1) if x.shape[-1] == 1 else x


def _npz_labels(path: Path, key: str, y: np.ndarray, n: int, x_key: str) -> np.ndarray:
    """Check an npz label array (integers >= 0, one per image) and return it as int64 ``[N]``."""
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.dtype.kind not in "iu":
        raise DataError(f"{path}: {key} has dtype {y.dtype}; expected integer class labels")
    if y.ndim != 1:
        raise DataError(f"{path}: {key} has shape {tuple(y.shape)}; expected [N] class labels")
    if len(y) != n:
        raise DataError(f"{path}: {key} has {len(y)} labels but {x_key} has {n} images")
    if y.min() < 0:
        raise DataError(f"{path}: {key} has negative label {int(y.min())}; labels must be 0..K-1")
    return y.astype(np.int64)


def _load_npz(path: Path, resolution: int | None, max_per_class: int | None) -> ImageData:
    try:
        archive = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
        raise DataError(f"{path}: not a readable .npz archive ({e})") from None
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise DataError(f"{path}: not an .npz archive of named arrays")
    with archive:
        keys = set(archive.files)

        def get(key: str) -> np.ndarray:
            try:
                return archive[key]
            except ValueError:
                raise DataError(f"{path}: array {key!r} holds Python objects and needs pickle to load, which is "
                                f"not allowed; save it as a plain array (strings: np.array(names, dtype=str))"
                                ) from None
            except (OSError, EOFError, zipfile.BadZipFile) as e:
                raise DataError(f"{path}: array {key!r} is unreadable ({e})") from None

        missing = [k for k in ("x_train", "y_train") if k not in keys]
        if missing:
            raise DataError(f"{path}: missing {', '.join(missing)}; an .npz needs x_train (uint8 [N, H, W, 3]) "
                            f"and y_train (int [N]), optionally x_test, y_test and classes (found: "
                            f"{', '.join(sorted(keys)) or 'nothing'})")
        if ("x_test" in keys) != ("y_test" in keys):
            raise DataError(f"{path}: has {'x_test' if 'x_test' in keys else 'y_test'} without "
                            f"{'y_test' if 'x_test' in keys else 'x_test'}; give both or neither")
        x_train = _npz_images(path, "x_train", get("x_train"))
        y_train = _npz_labels(path, "y_train", get("y_train"), len(x_train), "x_train")
        x_test = y_test = None
        if "x_test" in keys:
            x_test = _npz_images(path, "x_test", get("x_test"))
            y_test = _npz_labels(path, "y_test", get("y_test"), len(x_test), "x_test")
        names = None
        if "classes" in keys:
            classes = get("classes")
            if classes.ndim != 1 or classes.dtype.kind not in "US":
                raise DataError(f"{path}: classes must be a 1-D string array, got {classes.dtype} "
                                f"{tuple(classes.shape)}")
            names = tuple(c.decode() if isinstance(c, bytes) else str(c) for c in classes.tolist())
    names = _num_classes(path, [y for y in (y_train, y_test) if y is not None], names)
    return _assemble("npz", path, x_train, y_train, x_test, y_test, names, resolution, max_per_class)


# ------------------------------------------------------------------------------------------- CIFAR batch folder

_SAFE_BUILTINS = frozenset({"dict", "list", "tuple", "set", "frozenset", "bytes", "bytearray", "str", "int",
                            "float", "complex", "bool"})
# (module, name) that rebuild numpy arrays and scalars; numpy 1 pickles name numpy.core, numpy 2 numpy._core.
_SAFE_NUMPY = frozenset({("multiarray", "_reconstruct"), ("multiarray", "scalar"), ("numeric", "_frombuffer")})


def _numpy_global(submodule: str, name: str) -> Any:
    for package in ("numpy._core", "numpy.core"):
        try:
            return getattr(importlib.import_module(f"{package}.{submodule}"), name)
        except (ImportError, AttributeError):
            continue
    raise pickle.UnpicklingError(f"numpy has no {submodule}.{name}")


class _SafeUnpickler(pickle.Unpickler):
    """Rebuilds only builtin containers and numpy arrays; any other global (os.system, eval, ...) is refused."""

    def find_class(self, module: str, name: str) -> Any:
        if module in ("builtins", "__builtin__") and name in _SAFE_BUILTINS:
            return getattr(builtins, name)
        if module in ("_codecs", "codecs") and name == "encode":  # how protocol 2 stores bytes
            return codecs.encode
        if module == "numpy" and name in ("ndarray", "dtype"):
            return getattr(np, name)
        for package in ("numpy.core.", "numpy._core."):
            if module.startswith(package) and (module[len(package):], name) in _SAFE_NUMPY:
                return _numpy_global(module[len(package):], name)
        raise pickle.UnpicklingError(f"refers to {module}.{name}, which is not allowed (only numpy arrays and "
                                     f"builtin containers are)")


def _unpickle(file: Path) -> Any:
    """Load one pickle with `_SafeUnpickler` (``encoding='bytes'``, as CIFAR's Python 2 pickles need)."""
    try:
        with open(file, "rb") as f:
            return _SafeUnpickler(f, encoding="bytes").load()
    except pickle.UnpicklingError as e:
        raise DataError(f"{file}: unsafe or corrupt pickle: {e}") from None
    except (OSError, EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError, MemoryError) as e:
        raise DataError(f"{file}: not a readable CIFAR batch pickle ({type(e).__name__}: {e})") from None


def _field(batch: dict, name: str) -> Any:
    for key in (name.encode(), name):
        if key in batch:
            return batch[key]
    return None


def _cifar_batch(file: Path) -> tuple[np.ndarray, np.ndarray]:
    """One CIFAR batch file -> (uint8 ``[n, 32, 32, 3]`` NHWC, int64 ``[n]``); stored rows are CHW row-major."""
    batch = _unpickle(file)
    if not isinstance(batch, dict):
        raise DataError(f"{file}: expected a dict with b'data' and b'labels', got {type(batch).__name__}")
    data, labels = _field(batch, "data"), _field(batch, "labels")
    if data is None or labels is None:
        raise DataError(f"{file}: expected a dict with b'data' and b'labels', got keys {sorted(map(repr, batch))}")
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2:
        raise DataError(f"{file}: b'data' must be a uint8 [N, 3*H*W] array, got "
                        f"{getattr(data, 'dtype', type(data).__name__)} {tuple(getattr(data, 'shape', ()))}")
    side = int(round((data.shape[1] / 3) ** 0.5))
    if 3 * side * side != data.shape[1] or side == 0:
        raise DataError(f"{file}: b'data' rows hold {data.shape[1]} values; expected 3*S*S (3072 for 32x32)")
    try:
        y = np.asarray(labels)
    except (TypeError, ValueError) as e:
        raise DataError(f"{file}: b'labels' is not a list of integers ({e})") from None
    if y.ndim != 1 or y.dtype.kind not in "iu" or len(y) != len(data):
        raise DataError(f"{file}: b'labels' must be {len(data)} integers, got {y.dtype} {tuple(y.shape)}")
    if len(y) and y.min() < 0:
        raise DataError(f"{file}: negative label {int(y.min())}; labels must be 0..K-1")
    x = data.reshape(len(data), 3, side, side).transpose(0, 2, 3, 1)
    return np.ascontiguousarray(x), y.astype(np.int64)


def _is_cifar_folder(path: Path) -> bool:
    return any((path / name).is_file() for name in CIFAR_MARKERS)


def _load_cifar(path: Path, resolution: int | None, max_per_class: int | None) -> ImageData:
    numbered = []
    for f in path.iterdir():
        suffix = f.name.removeprefix("data_batch_")
        if f.is_file() and f.name.startswith("data_batch_") and suffix.isdigit():
            numbered.append((int(suffix), f))
    if not numbered:
        raise DataError(f"{path}: looks like a CIFAR batch folder but has no data_batch_1..5 files")
    parts = [_cifar_batch(f) for _, f in sorted(numbered)]
    if len({p[0].shape[1:] for p in parts}) > 1:
        raise DataError(f"{path}: data batches hold images of different sizes")
    x_train, y_train = np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])
    x_test = y_test = None
    if (path / "test_batch").is_file():
        x_test, y_test = _cifar_batch(path / "test_batch")
    names = None
    if (path / "batches.meta").is_file():
        meta = _unpickle(path / "batches.meta")
        label_names = _field(meta, "label_names") if isinstance(meta, dict) else None
        if not isinstance(label_names, (list, tuple)) or not all(isinstance(n, (bytes, str)) for n in label_names):
            raise DataError(f"{path / 'batches.meta'}: expected a dict with b'label_names', a list of names")
        names = tuple(n.decode("utf-8", "replace") if isinstance(n, bytes) else n for n in label_names)
    names = _num_classes(path, [y for y in (y_train, y_test) if y is not None], names)
    return _assemble("cifar", path, x_train, y_train, x_test, y_test, names, resolution, max_per_class)


# ------------------------------------------------------------------------------------------------- ImageFolder


def _visible(path: Path) -> list[Path]:
    return sorted((p for p in path.iterdir() if not p.name.startswith(".")), key=lambda p: p.name)


def _class_files(root: Path) -> dict[str, list[Path]]:
    """``{class: sorted image files}`` of ``root/<class>/<image>``; hidden and non-image files are skipped."""
    classes = {}
    for d in _visible(root):
        if d.is_dir():
            classes[d.name] = [f for f in _visible(d) if f.is_file() and f.suffix.lower() in IMAGE_EXTENSIONS]
    return classes


def _decode(file: Path, resolution: int | None) -> np.ndarray:
    """One image file -> uint8 ``[H, W, 3]`` RGB, resized (bilinear) to ``resolution x resolution`` if given."""
    from PIL import Image

    try:
        with Image.open(file) as img:
            img = img.convert("RGB")
            if resolution is not None and img.size != (resolution, resolution):
                img = img.resize((resolution, resolution), Image.Resampling.BILINEAR)
            return np.asarray(img, dtype=np.uint8)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        raise DataError(f"{file}: unreadable image ({type(e).__name__}: {e})") from None


def _decode_all(files: list[Path], resolution: int | None, root: Path) -> np.ndarray:
    """Decode `files` (in order) into uint8 ``[N, H, W, 3]``; without `resolution` all must share one size."""
    workers = max(1, min(8, os.cpu_count() or 1, len(files)))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        images = list(pool.map(lambda f: _decode(f, resolution), files))
    odd = next((i for i, im in enumerate(images) if im.shape != images[0].shape), None)
    if odd is not None:
        (h0, w0), (h1, w1) = images[0].shape[:2], images[odd].shape[:2]
        raise DataError(f"{root}: images differ in size ({files[0].name} is {w0}x{h0}, {files[odd].name} is "
                        f"{w1}x{h1}); pass resolution= to resize them")
    return np.stack(images)


def _split_layout(path: Path) -> tuple[Path, Path | None]:
    """(train root, test root or None): ``root/train`` + ``root/val|test`` when root holds only such folders."""
    children = {p.name for p in _visible(path) if p.is_dir()}
    if "train" in children and children <= {"train", *TEST_SPLIT_NAMES}:
        test = next((path / n for n in TEST_SPLIT_NAMES if n in children), None)
        return path / "train", test
    return path, None


def _load_image_folder(path: Path, resolution: int | None, max_per_class: int | None) -> ImageData:
    train_root, test_root = _split_layout(path)
    train_files = _class_files(train_root)
    if not train_files:
        raise DataError(f"{train_root}: no class folders; expected an ImageFolder (root/<class>/<images>), a "
                        f"CIFAR-10 batch folder, or an .npz file")
    empty = [c for c, files in train_files.items() if not files]
    if empty:
        raise DataError(f"{train_root / empty[0]}: class folder holds no images "
                        f"(extensions: {', '.join(sorted(IMAGE_EXTENSIONS))})")
    names = tuple(sorted(train_files))
    index = {c: i for i, c in enumerate(names)}
    if len(names) < 2:
        raise DataError(f"{train_root}: needs at least 2 class folders, found {len(names)} ({names[0]})")

    def listing(files: dict[str, list[Path]]) -> tuple[list[Path], np.ndarray]:
        paths = [f for c in sorted(files) for f in files[c]]
        return paths, np.array([index[c] for c in sorted(files) for _ in files[c]], dtype=np.int64)

    train_paths, y_train = listing(train_files)
    test_paths, y_test = train_paths, None
    if test_root is not None:
        test_files = {c: f for c, f in _class_files(test_root).items() if f}
        unknown = sorted(set(test_files) - set(index))
        if unknown:
            raise DataError(f"{test_root / unknown[0]}: class {unknown[0]!r} has no folder in {train_root}")
        if not test_files:
            raise DataError(f"{test_root}: test split holds no images in class folders")
        test_paths, y_test = listing(test_files)
    # split and subsample the file lists, so that only the images kept are decoded
    train_idx, test_idx, held_out = _select(y_train, y_test, max_per_class, path)
    y_test = (y_train if y_test is None else y_test)[test_idx]
    x_test = _decode_all([test_paths[i] for i in test_idx], resolution, test_root or train_root)
    x_train = _decode_all([train_paths[i] for i in train_idx], resolution, train_root)
    y_train = y_train[train_idx]
    if x_train.shape[1:] != x_test.shape[1:]:
        raise DataError(f"{path}: train images are {x_train.shape[2]}x{x_train.shape[1]} but test images "
                        f"{x_test.shape[2]}x{x_test.shape[1]}; pass resolution= to resize both")
    data = ImageData(x_train=torch.from_numpy(x_train), y_train=torch.from_numpy(y_train),
                     x_test=torch.from_numpy(x_test), y_test=torch.from_numpy(y_test),
                     num_classes=len(names), class_names=names,
                     source=_source("imagefolder", path, len(y_train), len(y_test), held_out, resolution,
                                    max_per_class))
    logger.info("loaded %s", data.source)
    return data


# ------------------------------------------------------------------------------------------------------ public


def load_data(path: str | Path, resolution: int | None = None, max_per_class: int | None = None) -> ImageData:
    """Load image-classification data from an ``.npz``, a CIFAR-10 batch folder or an ImageFolder directory.

    Args:
        path: the ``.npz`` file or the folder (see the module docstring for the layouts).
        resolution: if given, every image is resized (bilinear) to ``resolution x resolution`` pixels; needed for
            an ImageFolder whose images differ in size. None keeps the stored size.
        max_per_class: keep at most this many images of each class in each split (seed 0), for fast proxies;
            applied after the test split is held out.

    Returns:
        `ImageData` with uint8 ``[N, H, W, 3]`` images and int64 ``[N]`` labels for train and test.

    Raises:
        DataError: missing path, unknown format, empty folder, wrong dtypes or shapes, labels out of range,
            unreadable image, or a pickle that is corrupt or would run code.
        ValueError: `resolution` or `max_per_class` is not a positive integer.
    """
    _check_args(resolution, max_per_class)
    path = Path(path).expanduser()
    if not path.exists():
        raise DataError(f"{path}: no such file or folder")
    if path.is_file():
        if path.suffix.lower() == ".npz":
            return _load_npz(path, resolution, max_per_class)
        hint = "; extract it first" if path.name.endswith((".tar.gz", ".tgz", ".tar", ".zip")) else ""
        raise DataError(f"{path}: unknown data format {path.suffix or '(no extension)'!r}; expected an .npz file, "
                        f"a CIFAR-10 batch folder or an ImageFolder directory{hint}")
    if not path.is_dir():
        raise DataError(f"{path}: neither a file nor a folder")
    if not any(not p.name.startswith(".") for p in path.iterdir()):
        raise DataError(f"{path}: folder is empty")
    if not _is_cifar_folder(path) and _is_cifar_folder(path / "cifar-10-batches-py"):
        path = path / "cifar-10-batches-py"
    if _is_cifar_folder(path):
        return _load_cifar(path, resolution, max_per_class)
    return _load_image_folder(path, resolution, max_per_class)


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
