"""Reading a CIFAR-10 python batch folder with an unpickler that only rebuilds numpy arrays and builtin containers."""
from __future__ import annotations

import builtins
import codecs
import importlib
import pickle
from pathlib import Path
from typing import Any

import numpy as np

from nas.data.images import DataError, ImageData, assemble, checked_class_names

__all__ = ["CIFAR_MARKERS", "is_cifar_folder", "load_cifar"]


CIFAR_MARKERS = ("data_batch_1", "batches.meta", "test_batch")


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


def is_cifar_folder(path: Path) -> bool:
    return any((path / name).is_file() for name in CIFAR_MARKERS)


def load_cifar(path: Path, resolution: int | None, max_per_class: int | None) -> ImageData:
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
    names = checked_class_names(path, [y for y in (y_train, y_test) if y is not None], names)
    return assemble("cifar", path, x_train, y_train, x_test, y_test, names, resolution, max_per_class)
