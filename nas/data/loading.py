"""`load_data(path)`: the format chosen from what `path` is, read by its module."""
from __future__ import annotations

from pathlib import Path


from nas.data.cifar import is_cifar_folder, load_cifar
from nas.data.image_folder import load_image_folder
from nas.data.images import DataError, ImageData, check_load_args
from nas.data.npz import load_npz

__all__ = ["load_data"]


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
    check_load_args(resolution, max_per_class)
    path = Path(path).expanduser()
    if not path.exists():
        raise DataError(f"{path}: no such file or folder")
    if path.is_file():
        if path.suffix.lower() == ".npz":
            return load_npz(path, resolution, max_per_class)
        hint = "; extract it first" if path.name.endswith((".tar.gz", ".tgz", ".tar", ".zip")) else ""
        raise DataError(f"{path}: unknown data format {path.suffix or '(no extension)'!r}; expected an .npz file, "
                        f"a CIFAR-10 batch folder or an ImageFolder directory{hint}")
    if not path.is_dir():
        raise DataError(f"{path}: neither a file nor a folder")
    if not any(not p.name.startswith(".") for p in path.iterdir()):
        raise DataError(f"{path}: folder is empty")
    if not is_cifar_folder(path) and is_cifar_folder(path / "cifar-10-batches-py"):
        path = path / "cifar-10-batches-py"
    if is_cifar_folder(path):
        return load_cifar(path, resolution, max_per_class)
    return load_image_folder(path, resolution, max_per_class)
