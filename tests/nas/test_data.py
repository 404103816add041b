"""Loading user data (npz, CIFAR-10 batch folders, ImageFolder) and the minibatches the proxies train on."""
from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from nas.data import IMAGENET_MEAN, IMAGENET_STD, DataError, ImageData, batches, load_data

ROOT = Path(__file__).resolve().parents[2]
CIFAR_SUBSET = ROOT.parent / "shared/data/cifar10_subset.npz"


def _random_images(n: int, size: int = 32, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


def _source_arrays() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, list[str]]:
    """(x_train [120], y_train, x_test [40], y_test, class names): real CIFAR images when present, else random."""
    if CIFAR_SUBSET.exists():
        with np.load(CIFAR_SUBSET) as z:
            return (z["x_train"][:120], z["y_train"][:120], z["x_test"][:40], z["y_test"][:40],
                    [str(c) for c in z["classes"]])
    rng = np.random.default_rng(0)
    return (_random_images(120), rng.integers(0, 10, 120), _random_images(40, seed=1), rng.integers(0, 10, 40),
            [f"class{i}" for i in range(10)])


def _write_cifar_folder(folder: Path, protocol: int = 2) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """A folder in exactly the cifar-10-batches-py layout (bytes keys, [N, 3072] uint8 CHW rows), 3 train batches."""
    x_train, y_train, x_test, y_test, names = _source_arrays()
    folder.mkdir()

    def dump(name: str, x: np.ndarray, y: np.ndarray) -> None:
        rows = np.ascontiguousarray(x.transpose(0, 3, 1, 2).reshape(len(x), 3072))
        batch = {b"batch_label": name.encode(), b"labels": [int(v) for v in y], b"data": rows,
                 b"filenames": [f"img_{i}.png".encode() for i in range(len(x))]}
        with open(folder / name, "wb") as f:
            pickle.dump(batch, f, protocol=protocol)

    for i in range(3):
        dump(f"data_batch_{i + 1}", x_train[40 * i:40 * (i + 1)], y_train[40 * i:40 * (i + 1)])
    dump("test_batch", x_test, y_test)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({b"label_names": [n.encode() for n in names], b"num_cases_per_batch": 40,
                     b"num_vis": 3072}, f, protocol=protocol)
    return x_train, y_train, x_test, y_test


def _save_png(path: Path, width: int, height: int, seed: int, mode: str = "RGB") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    channels = {"RGB": (3,), "L": ()}[mode]
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, *channels), dtype=np.uint8)
    Image.fromarray(pixels, mode=mode).save(path)


# ------------------------------------------------------------------------------------------------------- npz


def test_npz_round_trip(tmp_path: Path) -> None:
    x_train, x_test = _random_images(30, 12), _random_images(10, 12, seed=1)
    y_train, y_test = np.arange(30) % 3, np.arange(10) % 3
    np.savez(tmp_path / "d.npz", x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test,
             classes=np.array(["a", "b", "c"]))
    data = load_data(tmp_path / "d.npz")
    assert data.x_train.dtype == torch.uint8 and data.y_train.dtype == torch.int64
    assert np.array_equal(data.x_train.numpy(), x_train) and np.array_equal(data.x_test.numpy(), x_test)
    assert np.array_equal(data.y_train.numpy(), y_train) and np.array_equal(data.y_test.numpy(), y_test)
    assert data.num_classes == 3 and data.class_names == ("a", "b", "c")
    assert data.image_size == (12, 12) and (data.num_train, data.num_test) == (30, 10)
    assert data.source == f"npz {tmp_path / 'd.npz'} (30 train / 10 test)"


@pytest.mark.skipif(not CIFAR_SUBSET.exists(), reason="shared CIFAR-10 subset not present")
def test_shared_cifar_subset_loads() -> None:
    data = load_data(CIFAR_SUBSET)
    assert (data.num_train, data.num_test, data.num_classes) == (5000, 1000, 10)
    assert tuple(data.x_train.shape) == (5000, 32, 32, 3) and data.class_names[0] == "airplane"
    assert torch.bincount(data.y_train).tolist() == [500] * 10
    assert torch.bincount(data.y_test).tolist() == [100] * 10
    small = load_data(CIFAR_SUBSET, resolution=16, max_per_class=7)
    assert tuple(small.x_train.shape) == (70, 16, 16, 3) and tuple(small.x_test.shape) == (70, 16, 16, 3)
    assert torch.bincount(small.y_train).tolist() == [7] * 10


def test_npz_without_test_split_holds_out_stratified_10_percent(tmp_path: Path) -> None:
    x = _random_images(200, 8)
    y = np.repeat(np.arange(4), [100, 50, 30, 20])
    np.savez(tmp_path / "d.npz", x_train=x, y_train=y)
    data = load_data(tmp_path / "d.npz")
    assert torch.bincount(data.y_test).tolist() == [10, 5, 3, 2]
    assert torch.bincount(data.y_train).tolist() == [90, 45, 27, 18]
    # train and test partition the images (each image is unique)
    seen = sorted(bytes(im) for im in np.concatenate([data.x_train.numpy(), data.x_test.numpy()]))
    assert seen == sorted(bytes(im) for im in x)
    assert "held out" in data.source
    again = load_data(tmp_path / "d.npz")
    assert torch.equal(again.x_test, data.x_test) and torch.equal(again.y_train, data.y_train)


def test_max_per_class_is_deterministic(tmp_path: Path) -> None:
    np.savez(tmp_path / "d.npz", x_train=_random_images(100, 8), y_train=np.arange(100) % 2)
    a, b = load_data(tmp_path / "d.npz", max_per_class=5), load_data(tmp_path / "d.npz", max_per_class=5)
    assert torch.bincount(a.y_train).tolist() == [5, 5] and torch.bincount(a.y_test).tolist() == [5, 5]
    assert torch.equal(a.x_train, b.x_train) and torch.equal(a.x_test, b.x_test)


def test_grayscale_npz_repeats_to_rgb(tmp_path: Path) -> None:
    gray = np.random.default_rng(0).integers(0, 256, (20, 9, 9), dtype=np.uint8)
    np.savez(tmp_path / "g.npz", x_train=gray, y_train=np.arange(20) % 2, x_test=gray[:4], y_test=np.arange(4) % 2)
    data = load_data(tmp_path / "g.npz")
    assert tuple(data.x_train.shape) == (20, 9, 9, 3)
    for c in range(3):
        assert np.array_equal(data.x_train[..., c].numpy(), gray)
    assert data.class_names == ("0", "1")


# ------------------------------------------------------------------------------------------ CIFAR batch folder


@pytest.mark.parametrize("protocol", [2, pickle.HIGHEST_PROTOCOL], ids=["protocol2", "protocol_highest"])
def test_cifar_batch_folder_loads_nhwc(tmp_path: Path, protocol: int) -> None:
    x_train, y_train, x_test, y_test = _write_cifar_folder(tmp_path / "cifar-10-batches-py", protocol)
    data = load_data(tmp_path / "cifar-10-batches-py")
    assert tuple(data.x_train.shape) == (120, 32, 32, 3) and tuple(data.x_test.shape) == (40, 32, 32, 3)
    assert np.array_equal(data.x_train.numpy(), x_train) and np.array_equal(data.x_test.numpy(), x_test)
    assert np.array_equal(data.y_train.numpy(), y_train) and np.array_equal(data.y_test.numpy(), y_test)
    assert data.num_classes == 10 and len(data.class_names) == 10
    assert data.source.startswith("cifar ")
    # the folder above it (as the CIFAR tarball extracts) is accepted too
    assert torch.equal(load_data(tmp_path).x_train, data.x_train)


def test_cifar_pickles_written_by_numpy_1_load(tmp_path: Path) -> None:
    """The real files name ``numpy.core.multiarray`` (numpy 1); numpy 2 must still rebuild them, safely."""
    x_train, *_ = _write_cifar_folder(tmp_path / "c", protocol=2)
    for f in (tmp_path / "c").iterdir():
        f.write_bytes(f.read_bytes().replace(b"numpy._core.multiarray\n", b"numpy.core.multiarray\n"))
    assert b"numpy.core.multiarray" in (tmp_path / "c" / "data_batch_1").read_bytes()
    assert np.array_equal(load_data(tmp_path / "c").x_train.numpy(), x_train)


class _Exploit:
    """Pickles to ``os.system(cmd)``: what a malicious data_batch file would do."""

    def __init__(self, cmd: str) -> None:
        self.cmd = cmd

    def __reduce__(self) -> tuple:
        return os.system, (self.cmd,)


class _EvalExploit:
    def __init__(self, code: str) -> None:
        self.code = code

    def __reduce__(self) -> tuple:
        return eval, (self.code,)


@pytest.mark.parametrize("exploit", ["system", "eval"])
def test_malicious_cifar_pickle_is_refused_and_not_run(tmp_path: Path, exploit: str) -> None:
    _write_cifar_folder(tmp_path / "c")
    marker = tmp_path / "pwned"
    payload = (_Exploit(f"touch {marker}") if exploit == "system"
               else _EvalExploit(f"open({str(marker)!r}, 'w').close()"))
    with open(tmp_path / "c" / "data_batch_2", "wb") as f:
        pickle.dump({b"data": payload, b"labels": [0]}, f, protocol=2)
    with pytest.raises(DataError, match=r"data_batch_2: unsafe or corrupt pickle: refers to .*(system|eval)"):
        load_data(tmp_path / "c")
    assert not marker.exists()


def test_corrupt_cifar_batch(tmp_path: Path) -> None:
    _write_cifar_folder(tmp_path / "c")
    (tmp_path / "c" / "test_batch").write_bytes(b"\x80\x02garbage")
    with pytest.raises(DataError, match="test_batch"):
        load_data(tmp_path / "c")


# ------------------------------------------------------------------------------------------------- ImageFolder


def test_image_folder_with_odd_sizes_and_resolution(tmp_path: Path) -> None:
    root = tmp_path / "imgs"
    sizes = [(17, 23), (30, 12), (5, 40)]
    for c, name in enumerate(["zebra", "cat"]):
        for i, (w, h) in enumerate(sizes):
            _save_png(root / name / f"{i}.png", w, h, seed=10 * c + i, mode="RGB" if i else "L")
    (root / "cat" / ".DS_Store").write_bytes(b"junk")
    (root / ".hidden").mkdir()
    (root / "cat" / "notes.txt").write_text("not an image")
    with pytest.raises(DataError, match="images differ in size.*resolution="):
        load_data(root)
    data = load_data(root, resolution=16)
    assert data.class_names == ("cat", "zebra") and data.num_classes == 2
    assert tuple(data.x_train.shape[1:]) == (16, 16, 3) and data.num_train + data.num_test == 6
    assert data.num_test == 2 and torch.bincount(data.y_test).tolist() == [1, 1]
    assert data.source.startswith(f"imagefolder {root} ")


def test_image_folder_with_train_val_split_and_equal_sizes(tmp_path: Path) -> None:
    for split, n in (("train", 3), ("val", 2)):
        for c in ("b", "a"):
            for i in range(n):
                _save_png(tmp_path / split / c / f"{i}.png", 10, 8, seed=i)
    data = load_data(tmp_path)
    assert tuple(data.x_train.shape) == (6, 8, 10, 3) and tuple(data.x_test.shape) == (4, 8, 10, 3)
    assert data.y_train.tolist() == [0, 0, 0, 1, 1, 1] and data.y_test.tolist() == [0, 0, 1, 1]
    expected = np.asarray(Image.open(tmp_path / "train" / "a" / "0.png").convert("RGB"))
    assert np.array_equal(data.x_train[0].numpy(), expected)


def test_unreadable_image_names_the_file(tmp_path: Path) -> None:
    for c in ("a", "b"):
        for i in range(2):
            _save_png(tmp_path / c / f"{i}.png", 8, 8, seed=i)
    (tmp_path / "b" / "broken.png").write_bytes(b"this is not a png")
    with pytest.raises(DataError, match=r"broken\.png: unreadable image"):
        load_data(tmp_path, resolution=8)


# ------------------------------------------------------------------------------------------------- bad inputs


def _npz(tmp_path: Path, **arrays: np.ndarray) -> Path:
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    return path


BAD_INPUTS = [
    ("missing", "no such file or folder"),
    ("empty_dir", "folder is empty"),
    ("csv", r"unknown data format '\.csv'"),
    ("float_x", "x_train has dtype float32; expected uint8"),
    ("negative_label", "y_train has negative label -1"),
    ("label_beyond_classes", "label 5 is out of range for the 3 class names"),
    ("label_of_2_62", "label 4611686018427387904 makes 4611686018427387905 classes but only 2 distinct labels"),
    ("label_of_10_6", "label 1000000 makes 1000001 classes but only 2 distinct labels have images"),
    ("mismatched_lengths", "y_train has 9 labels but x_train has 10 images"),
    ("needs_pickle", "array 'classes' holds Python objects and needs pickle"),
    ("channels_first", r"x_train has shape \(10, 3, 8, 8\).*channels-first"),
    ("one_class", "needs at least 2 classes"),
    ("no_x_train", "missing x_train"),
    ("not_a_zip", "not a readable .npz archive"),
    ("one_class_folder", "needs at least 2 class folders"),
]


@pytest.mark.parametrize("case, pattern", BAD_INPUTS, ids=[case for case, _ in BAD_INPUTS])
def test_bad_inputs_raise_one_line_data_error(tmp_path: Path, case: str, pattern: str) -> None:
    x, y = _random_images(10, 8), np.arange(10) % 2
    if case == "missing":
        path = tmp_path / "nope"
    elif case == "empty_dir":
        path = tmp_path / "empty"
        path.mkdir()
        (path / ".DS_Store").write_bytes(b"")
    elif case == "csv":
        path = tmp_path / "data.csv"
        path.write_text("a,b\n1,2\n")
    elif case == "float_x":
        path = _npz(tmp_path, x_train=x.astype(np.float32) / 255, y_train=y)
    elif case == "negative_label":
        path = _npz(tmp_path, x_train=x, y_train=y - 1)
    elif case == "label_beyond_classes":
        path = _npz(tmp_path, x_train=x, y_train=np.where(y == 1, 5, 0), classes=np.array(["a", "b", "c"]))
    elif case in ("label_of_2_62", "label_of_10_6"):
        path = _npz(tmp_path, x_train=x, y_train=np.where(y == 1, 2**62 if case == "label_of_2_62" else 10**6, 0))
    elif case == "mismatched_lengths":
        path = _npz(tmp_path, x_train=x, y_train=y[:9])
    elif case == "needs_pickle":
        path = _npz(tmp_path, x_train=x, y_train=y, classes=np.array(["a", "b"], dtype=object))
    elif case == "channels_first":
        path = _npz(tmp_path, x_train=x.transpose(0, 3, 1, 2), y_train=y)
    elif case == "one_class":
        path = _npz(tmp_path, x_train=x, y_train=np.zeros(10, dtype=np.int64))
    elif case == "no_x_train":
        path = _npz(tmp_path, images=x, y_train=y)
    elif case == "not_a_zip":
        path = tmp_path / "fake.npz"
        path.write_text("hello")
    else:
        _save_png(tmp_path / "root" / "only" / "0.png", 4, 4, seed=0)
        path = tmp_path / "root"
    with pytest.raises(DataError, match=pattern) as info:
        load_data(path)
    message = str(info.value)
    assert "\n" not in message and str(path) in message


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="resolution"):
        load_data("anything", resolution=0)
    with pytest.raises(ValueError, match="max_per_class"):
        load_data("anything", max_per_class=-3)


def test_image_data_checks_its_fields() -> None:
    x, y = torch.zeros(4, 8, 8, 3, dtype=torch.uint8), torch.tensor([0, 1, 0, 1])
    ImageData(x, y, x, y, 2, ("a", "b"), "test")
    with pytest.raises(ValueError, match="labels outside"):
        ImageData(x, y + 1, x, y, 2, ("a", "b"), "test")
    with pytest.raises(ValueError, match="uint8"):
        ImageData(x.float(), y, x, y, 2, ("a", "b"), "test")


# ---------------------------------------------------------------------------------------------------- batches


def _toy(n: int = 37, size: int = 12) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.from_numpy(_random_images(n, size)), torch.arange(n)


def test_batches_shapes_dtypes_and_normalisation() -> None:
    x, y = _toy()
    out = list(batches(x, y, 16, 12, shuffle=False, seed=0))
    assert [tuple(xb.shape) for xb, _ in out] == [(16, 3, 12, 12), (16, 3, 12, 12), (5, 3, 12, 12)]
    assert all(xb.dtype == torch.float32 and yb.dtype == torch.int64 for xb, yb in out)
    mean, std = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    pixels = torch.cat([xb for xb, _ in out]) * std + mean
    assert torch.allclose(pixels, x.permute(0, 3, 1, 2).float() / 255, atol=1e-5)
    assert torch.cat([yb for _, yb in out]).tolist() == list(range(37))
    resized = next(batches(x, y, 8, 20, shuffle=False, seed=0))[0]
    assert tuple(resized.shape) == (8, 3, 20, 20)


def test_batches_shuffle_covers_every_sample_once_and_is_deterministic() -> None:
    x, y = _toy()
    state = torch.random.get_rng_state()

    def epoch(seed: int, augment: bool) -> tuple[torch.Tensor, torch.Tensor]:
        out = list(batches(x, y, 8, 12, shuffle=True, seed=seed, augment=augment))
        return torch.cat([xb for xb, _ in out]), torch.cat([yb for _, yb in out])

    xa, ya = epoch(0, False)
    assert sorted(ya.tolist()) == list(range(37)) and ya.tolist() != list(range(37))
    xb, yb = epoch(0, False)
    assert torch.equal(xa, xb) and torch.equal(ya, yb)
    assert not torch.equal(epoch(1, False)[1], ya)
    xc, yc = epoch(0, True)
    xd, yd = epoch(0, True)
    assert torch.equal(xc, xd) and torch.equal(yc, yd)
    assert sorted(yc.tolist()) == list(range(37))
    assert torch.equal(torch.random.get_rng_state(), state)


def test_augment_changes_pixels_but_keeps_shape() -> None:
    x, y = _toy(64, 16)
    plain = next(batches(x, y, 64, 16, shuffle=False, seed=3))[0]
    augmented = next(batches(x, y, 64, 16, shuffle=False, seed=3, augment=True))[0]
    assert augmented.shape == plain.shape and not torch.equal(augmented, plain)
    # zero padding shows up as black (normalised) borders on some images
    black = ((torch.zeros(3) - torch.tensor(IMAGENET_MEAN)) / torch.tensor(IMAGENET_STD)).view(3, 1)
    border = torch.cat([augmented[:, :, 0, :], augmented[:, :, -1, :], augmented[:, :, :, 0], augmented[:, :, :, -1]],
                       dim=2)
    assert torch.isclose(border, black.expand_as(border[0]).unsqueeze(0), atol=1e-5).all(dim=1).any()
    # every augmented image is a shifted, maybe flipped, copy of its source
    ref = x.permute(0, 3, 1, 2).float() / 255
    mean, std = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    pixels = augmented * std + mean
    for i in range(8):
        padded = torch.nn.functional.pad(ref[i], (4, 4, 4, 4))
        candidates = [padded[:, t:t + 16, s:s + 16] for t in range(9) for s in range(9)]
        candidates += [c.flip(2) for c in candidates]
        assert any(torch.allclose(pixels[i], c, atol=1e-5) for c in candidates)


def test_batches_rejects_bad_input() -> None:
    x, y = _toy()
    with pytest.raises(ValueError, match="uint8"):
        batches(x.float(), y, 8, 12, shuffle=False, seed=0)
    with pytest.raises(ValueError, match="batch_size"):
        batches(x, y, 0, 12, shuffle=False, seed=0)
    with pytest.raises(ValueError, match="labels"):
        batches(x, y[:3], 8, 12, shuffle=False, seed=0)
