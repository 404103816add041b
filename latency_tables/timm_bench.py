"""timm's inference benchmarks as calibration data: reading ``benchmark.py`` CSVs, and counting each model.

A row of timm's ``benchmark.py --bench inference`` CSV names a timm model, its image size, batch size and the
measured time per batch (``infer_step_time``, ms). Every such model is rebuilt with
``timm.create_model(name, pretrained=False)`` on the meta device and counted with the same counter as the
project's blocks (`latency_tables.counting`), at half precision (the benchmarks run AMP), so a row becomes a
``(CostProfile, batch, measured ms)`` sample for `latency_tables.gpu_model`.
"""
from __future__ import annotations

import csv
import gzip
import json
import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

import torch

from common.errors import UserFacingError
from common.files import write_bytes_atomic
from latency_tables.counting import RUNTIMES
from latency_tables.profile import CostProfile, ProfileError, profile_module
from search_spaces._compat import import_timm

__all__ = ["BenchmarkRow", "BenchmarkError", "read_benchmark_csv", "ModelCounts", "count_timm_model",
           "counts_cache_path", "load_counts", "count_models", "model_family"]

_log = logging.getLogger(__name__)

TIMM_COUNT_BATCH = 2  # profiles from batch 2 up (batch 1 skips copies some models make from batch 2 on)
REQUIRED_COLUMNS = ("model", "infer_img_size", "infer_batch_size", "infer_step_time")


class BenchmarkError(UserFacingError, ValueError):
    """A benchmark CSV cannot be used; the message names the file, and the row or column."""


@dataclass(frozen=True)
class BenchmarkRow:
    """One measured model: `step_ms` per batch of `batch` images of `img_size` px."""
    model: str
    img_size: int
    batch: int
    step_ms: float
    gmacs: float | None = None
    params_m: float | None = None

    @property
    def key(self) -> tuple[str, int]:
        return self.model, self.img_size


def _number(text: str, kind: type, path: Path, line: int, column: str) -> float:
    try:
        value = kind(float(text)) if kind is int else float(text)
    except (TypeError, ValueError):
        raise BenchmarkError(f"{path}: line {line}: {column} is {text!r}, not a number") from None
    if not math.isfinite(value) or value <= 0:
        raise BenchmarkError(f"{path}: line {line}: {column} must be a positive number, got {text!r}")
    return value


def read_benchmark_csv(path: str | Path) -> list[BenchmarkRow]:
    """The rows of a timm ``benchmark.py`` inference CSV (`BenchmarkError` with one line for anything unusable)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        reason = getattr(error, "strerror", None) or str(error).splitlines()[0]
        raise BenchmarkError(f"cannot read {path}: {reason}") from None
    reader = csv.DictReader(text.splitlines())
    missing = [c for c in REQUIRED_COLUMNS if c not in (reader.fieldnames or ())]
    if missing:
        raise BenchmarkError(f"{path}: not a timm inference benchmark CSV: missing column(s) {', '.join(missing)} "
                             f"(from `python benchmark.py --bench inference ... --results-file FILE.csv`)")
    rows = []
    for line, record in enumerate(reader, start=2):
        model = (record.get("model") or "").strip()
        if not model:
            raise BenchmarkError(f"{path}: line {line}: empty model name")
        gmacs = record.get("infer_gmacs")
        params = record.get("param_count")
        rows.append(BenchmarkRow(
            model=model, img_size=int(_number(record["infer_img_size"], int, path, line, "infer_img_size")),
            batch=int(_number(record["infer_batch_size"], int, path, line, "infer_batch_size")),
            step_ms=_number(record["infer_step_time"], float, path, line, "infer_step_time"),
            gmacs=float(gmacs) if gmacs not in (None, "") else None,
            params_m=float(params) if params not in (None, "") else None))
    if not rows:
        raise BenchmarkError(f"{path}: no rows")
    return rows


def model_family(name: str) -> str:
    """timm's family of a model name: its leading word (``swin_tiny_patch4_window7_224`` -> ``swin``,
    ``convnextv2_nano`` -> ``convnextv2``)."""
    return name.split("_")[0].split(".")[0]


@dataclass(frozen=True)
class ModelCounts:
    """A timm model's `CostProfile` per runtime at one image size, or why it could not be counted."""
    model: str
    img_size: int
    profiles: dict[str, CostProfile] | None
    params: int | None = None
    error: str | None = None


def _create(name: str, img_size: int) -> Callable[[], torch.nn.Module]:
    timm = import_timm()

    def build() -> torch.nn.Module:
        try:
            return timm.create_model(name, pretrained=False, img_size=img_size)
        except TypeError:  # models without a fixed input size take no img_size
            return timm.create_model(name, pretrained=False)
    return build


def count_timm_model(name: str, img_size: int) -> ModelCounts:
    """Count timm model `name` at `img_size` px on the meta device as timm's ``benchmark.py --amp`` runs it (an
    fp32 model under fp16 autocast, NCHW), both runtimes, batches 2 and 3 (the benchmarks run 8 images or more);
    failures come back as ``ModelCounts(error=...)`` (unknown names, models whose forward needs real values)."""
    timm = import_timm()
    if name not in timm.list_models():
        return ModelCounts(name, img_size, None, error="not a model of this timm version")
    build = _create(name, img_size)
    try:
        profiles = profile_module(build, (3, img_size, img_size), torch.float32, fuse_project_kernels=False,
                                  base=TIMM_COUNT_BATCH, autocast=torch.float16)
        with torch.device("meta"):
            params = sum(p.numel() for p in build().parameters())
    except (ProfileError, RuntimeError, NotImplementedError, TypeError, ValueError, AssertionError,
            IndexError, KeyError, AttributeError) as error:
        return ModelCounts(name, img_size, None, error=f"{type(error).__name__}: {str(error).splitlines()[0][:200]}"
                           if str(error) else type(error).__name__)
    return ModelCounts(name, img_size, profiles, params=params)


def _versions() -> dict[str, str]:
    return {"torch": torch.__version__.split("+")[0], "timm": import_timm().__version__}


def counts_cache_path() -> Path:
    """Where counted timm models are kept between runs: ``$XDG_CACHE_HOME/hybrid-nas/`` (default ~/.cache)."""
    root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    versions = _versions()
    return root / "hybrid-nas" / f"timm-counts-timm{versions['timm']}-torch{versions['torch']}.json.gz"


def _encode(counts: ModelCounts) -> dict:
    return {"model": counts.model, "img_size": counts.img_size, "params": counts.params, "error": counts.error,
            "profiles": None if counts.profiles is None else {r: p.to_json() for r, p in counts.profiles.items()}}


def _decode(row: dict) -> ModelCounts:
    profiles = None if row["profiles"] is None else {r: CostProfile.from_json(p) for r, p in row["profiles"].items()}
    return ModelCounts(row["model"], row["img_size"], profiles, row.get("params"), row.get("error"))


def load_counts(path: Path | None = None) -> dict[tuple[str, int], ModelCounts]:
    """The cached counts (empty if none, unreadable, or made by other torch/timm versions)."""
    path = path or counts_cache_path()
    try:
        with gzip.open(path, "rt", encoding="utf-8") as handle:
            data = json.load(handle)
    except (OSError, ValueError, EOFError):
        return {}
    if data.get("versions") != _versions() or set(data.get("runtimes", ())) != set(RUNTIMES):
        return {}
    return {(row["model"], row["img_size"]): _decode(row) for row in data["models"]}


def _store(counts: dict[tuple[str, int], ModelCounts], path: Path) -> None:
    data = {"versions": _versions(), "runtimes": list(RUNTIMES),
            "models": [_encode(c) for _, c in sorted(counts.items())]}
    write_bytes_atomic(path, gzip.compress(json.dumps(data, separators=(",", ":")).encode(), mtime=0))


def count_models(keys: Iterable[tuple[str, int]], path: Path | None = None,
                 progress: Callable[[Iterable], Iterable] = lambda items: items,
                 save_every: int = 50) -> dict[tuple[str, int], ModelCounts]:
    """Counts of every ``(model, img_size)`` in `keys`, from the cache at `path` where it has them; new ones are
    counted and the cache rewritten (whole, atomically) every `save_every` models and at the end."""
    path = path or counts_cache_path()
    cache = load_counts(path)
    wanted = list(dict.fromkeys(keys))
    todo = [key for key in wanted if key not in cache]
    for done, key in enumerate(progress(todo), start=1):
        cache[key] = count_timm_model(*key)
        if done % save_every == 0:
            _store(cache, path)
    if todo:
        _store(cache, path)
    return {key: cache[key] for key in wanted}
