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

Modules: one per file format (`npz`, `cifar`, `image_folder`), `images` (`ImageData` and the splitting every
reader shares), `loading` (`load_data`), `pipeline` (`batches`).
"""
from __future__ import annotations

from nas.data.images import DataError, ImageData
from nas.data.loading import load_data
from nas.data.pipeline import IMAGENET_MEAN, IMAGENET_STD, batches

__all__ = ["ImageData", "DataError", "load_data", "batches", "IMAGENET_MEAN", "IMAGENET_STD"]
