"""Reading an ``.npz`` (`x_train`, `y_train`, optionally `x_test`, `y_test`, `classes`), without pickle."""
from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from nas.data.images import DataError, ImageData, assemble, checked_class_names

__all__ = ["load_npz"]


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


def load_npz(path: Path, resolution: int | None, max_per_class: int | None) -> ImageData:
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
    names = checked_class_names(path, [y for y in (y_train, y_test) if y is not None], names)
    return assemble("npz", path, x_train, y_train, x_test, y_test, names, resolution, max_per_class)
