"""Reading an ImageFolder directory (``root/<class>/<image>``, or ``train/`` and ``val/``/``test/`` splits) with PIL."""
from __future__ import annotations

import logging
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

from nas.data.images import DataError, ImageData, select_splits, source_line

__all__ = ["IMAGE_EXTENSIONS", "TEST_SPLIT_NAMES", "load_image_folder"]

logger = logging.getLogger(__name__)


IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm"})
TEST_SPLIT_NAMES = ("val", "test")  # ImageFolder: the first one present is the test split


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


def load_image_folder(path: Path, resolution: int | None, max_per_class: int | None) -> ImageData:
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
    train_idx, test_idx, held_out = select_splits(y_train, y_test, max_per_class, path)
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
                     source=source_line("imagefolder", path, len(y_train), len(y_test), held_out, resolution,
                                    max_per_class))
    logger.info("loaded %s", data.source)
    return data
