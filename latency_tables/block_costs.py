"""What each block of the space costs, counted once and shipped: kernel profiles per variant, params, FLOPs.

A *variant* is what a table's target runs a block as: its implementation (``torch`` reference or ``triton``
kernels), runtime (``eager`` or ``compiled``) and precision (``fp32`` or ``half``: fp16 and bf16 move the same
bytes). A block's profiles (`profile.CostProfile`) are counted on the meta device with BatchNorm folded, as
deployed (`search_spaces.fold_batchnorm`), at batches 1 and 2; where batch 1 runs fewer kernels (copies a
one-image tensor skips) it gets a profile of its own and one from batch 2 up. Each block also stores its
parameters and its FLOPs as fvcore counts them in the unfolded, trainable network (multiply-adds, norms and
softmax included: `search_spaces.count_flops`), so the ``params`` and ``flops`` of an architecture are sums of
lookups that equal the counts of the built model.

``python launch.py costs --resolution 224`` counts every block of the space into ``data/block-counts.npz`` (an
hour on two cores for the 11,198 blocks at 224 px; a file written by another torch version is ignored). The file
is arrays (a compact npz, decoded block by block as looked up), so a fresh process's first estimate is quick.
Blocks missing from it are counted on first use (~30 ms a block and variant) and kept for the process.
"""
from __future__ import annotations

import functools
import io
import json
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
import torch

from common.files import write_bytes_atomic
from latency_tables.blocks import Block, decompose
from latency_tables.counting import OP_CLASSES
from latency_tables.profile import CostProfile, ProfileError, profile_module
from search_spaces import ArchSpec, fold_batchnorm, module_flops

__all__ = ["VARIANTS", "COUNTS_FILE", "BlockCosts", "variant_name", "count_block", "block_costs", "block_totals",
           "architecture_totals", "profile_for", "store_block_costs", "stored_block_costs"]

COUNTS_FILE = Path(__file__).resolve().parent / "data" / "block-counts.npz"
# name -> (implementation, runtime, dtype the block is counted in)
VARIANTS: dict[str, tuple[str, str, torch.dtype]] = {
    "torch-eager-fp32": ("torch", "eager", torch.float32),
    "triton-eager-half": ("triton", "eager", torch.float16),
    "triton-compiled-half": ("triton", "compiled", torch.float16),
    "torch-eager-half": ("torch", "eager", torch.float16),
    "torch-compiled-half": ("torch", "compiled", torch.float16),
    "triton-eager-fp32": ("triton", "eager", torch.float32),
    "triton-compiled-fp32": ("triton", "compiled", torch.float32),
}
SHIPPED_VARIANTS = ("torch-eager-fp32", "triton-eager-half", "triton-compiled-half")
CountKey = tuple[str, tuple[int, int, int]]  # (block key, input shape)


def variant_name(implementation: str, runtime: str, dtype: str) -> str:
    """The variant a table of `implementation`, `runtime` and `dtype` (fp32, fp16, bf16) counts its blocks as."""
    precision = "fp32" if dtype == "fp32" else "half"
    name = f"{implementation}-{runtime}-{precision}"
    if name not in VARIANTS:
        raise ValueError(f"no cost variant for implementation {implementation!r}, runtime {runtime!r}, dtype {dtype!r}")
    return name


@dataclass(frozen=True)
class BlockCosts:
    """A block's profiles per variant (each a tuple sorted by `CostProfile.base`), params and fvcore FLOPs
    (multiply-adds at batch 1)."""
    profiles: dict[str, tuple[CostProfile, ...]]
    params: int
    flops: int


def profile_for(profiles: tuple[CostProfile, ...], batch: int) -> CostProfile:
    """The profile of `profiles` that holds at `batch` (the one with the largest base not above it)."""
    return max((p for p in profiles if p.base <= batch), key=lambda p: p.base)


def _deployed(block: Block) -> Callable[[], torch.nn.Module]:
    return lambda: fold_batchnorm(block.build())


def _count_profiles(block: Block, variant: str) -> tuple[CostProfile, ...]:
    implementation, runtime, dtype = VARIANTS[variant]
    fuse = implementation == "triton"
    shape = block.example_input(1, device="meta").shape[1:]
    try:
        return (profile_module(_deployed(block), tuple(shape), dtype, fuse, (runtime,), base=1)[runtime],)
    except ProfileError:  # batch 1 skips copies: a batch-1 profile, and one from batch 2 up
        at_one = profile_module(_deployed(block), tuple(shape), dtype, fuse, (runtime,), base=1, exact_only=True)
        from_two = profile_module(_deployed(block), tuple(shape), dtype, fuse, (runtime,), base=2)
        return at_one[runtime], from_two[runtime]


def count_block(block: Block, variants: Iterable[str] = SHIPPED_VARIANTS) -> BlockCosts:
    """Count `block`: its profiles in `variants`, its params and its fvcore FLOPs (unfolded, batch 1)."""
    with torch.device("meta"):
        params = sum(p.numel() for p in block.build().parameters())
    torch.manual_seed(0)
    flops = module_flops(block.build(), block.example_input(1))
    return BlockCosts({v: _count_profiles(block, v) for v in variants}, params, flops)


FORMAT = 3


class StoredCosts(Mapping):
    """The block costs of a counts file, decoded one block at a time as they are looked up (the file holds
    ~13,000 blocks; decoding them all would take seconds, a search needs a few hundred)."""

    def __init__(self, arrays: dict[str, np.ndarray] | None = None) -> None:
        self._arrays = arrays
        self._decoded: dict[CountKey, BlockCosts] = {}
        self._index: dict[CountKey, int] = {}
        self._profiles: dict[int, list[int]] = {}
        if arrays is None:
            return
        meta = json.loads(bytes(arrays["meta"]).decode())
        self._variants = meta["variants"]
        keys = bytes(arrays["keys"]).decode().split("\n")
        self._index = {(key, tuple(int(v) for v in shape)): i for i, (key, shape) in enumerate(zip(keys,
                                                                                                 arrays["shapes"]))}
        for row, block in enumerate(arrays["profiles"][:, 0]):
            self._profiles.setdefault(int(block), []).append(row)

    def __len__(self) -> int:
        return len(self._index)

    def __iter__(self):
        return iter(self._index)

    def __getitem__(self, key: CountKey) -> BlockCosts:
        if key not in self._decoded:
            self._decoded[key] = self._decode(self._index[key])
        return self._decoded[key]

    def _decode(self, block: int) -> BlockCosts:
        a = self._arrays
        profiles: dict[str, list[CostProfile]] = {}
        for row in self._profiles.get(block, []):
            _, variant, base, c_start, c_count, m_start, m_count = (int(v) for v in a["profiles"][row])
            compute = tuple((OP_CLASSES[int(r[0])], *map(float, r[1:]))
                            for r in a["compute"][c_start:c_start + c_count])
            memory = tuple((OP_CLASSES[int(r[0])], int(r[1]), float(r[2]), float(r[3]))
                           for r in a["memory"][m_start:m_start + m_count])
            profiles.setdefault(self._variants[variant], []).append(CostProfile(compute, memory, base))
        return BlockCosts({v: tuple(sorted(ps, key=lambda p: p.base)) for v, ps in profiles.items()},
                          int(a["params"][block]), int(a["flops"][block]))


def _encode(entries: dict[CountKey, BlockCosts]) -> bytes:
    keys = sorted(entries)
    variants = sorted({v for costs in entries.values() for v in costs.profiles})
    profiles, compute, memory = [], [], []
    for index, key in enumerate(keys):
        for variant, profile_list in entries[key].profiles.items():
            for profile in profile_list:
                profiles.append([index, variants.index(variant), profile.base, len(compute), len(profile.compute),
                                 len(memory), len(profile.memory)])
                compute += [[OP_CLASSES.index(c), *rest] for c, *rest in profile.compute]
                memory += [[OP_CLASSES.index(c), *rest] for c, *rest in profile.memory]
    arrays = {"meta": np.frombuffer(json.dumps({"format": FORMAT, "torch": _torch_version(),
                                               "variants": variants}).encode(), dtype=np.uint8),
              "keys": np.frombuffer("\n".join(key for key, _ in keys).encode(), dtype=np.uint8),
              "shapes": np.array([shape for _, shape in keys], dtype=np.int64).reshape(-1, 3),
              "params": np.array([entries[k].params for k in keys], dtype=np.int64),
              "flops": np.array([entries[k].flops for k in keys], dtype=np.int64),
              "profiles": np.array(profiles, dtype=np.int64).reshape(-1, 7),
              "compute": np.array(compute, dtype=np.float64).reshape(-1, 5),
              "memory": np.array(memory, dtype=np.float64).reshape(-1, 4)}
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    return buffer.getvalue()


def _read(path: Path) -> StoredCosts:
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {name: data[name] for name in data.files}
        meta = json.loads(bytes(arrays["meta"]).decode())
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):  # missing or damaged: count instead
        return StoredCosts()
    if meta.get("format") != FORMAT or meta.get("torch") != _torch_version():
        return StoredCosts()
    return StoredCosts(arrays)


def _torch_version() -> str:
    return torch.__version__.split("+")[0]  # CPU and CUDA builds count alike


@functools.lru_cache(maxsize=4)
def _read_once(path: Path) -> StoredCosts:
    return _read(path)


def stored_block_costs(path: Path | None = None) -> StoredCosts:
    """The costs in `path` (default `COUNTS_FILE`; read once per process, decoded as looked up)."""
    return _read_once(path or COUNTS_FILE)


@functools.lru_cache(maxsize=65536)
def _counted(block: Block, variant: str) -> tuple[CostProfile, ...]:
    return _count_profiles(block, variant)


@functools.lru_cache(maxsize=65536)
def _counted_totals(block: Block) -> tuple[int, int]:
    costs = count_block(block, ())
    return costs.params, costs.flops


def block_totals(block: Block) -> tuple[int, int]:
    """``(params, fvcore FLOPs)`` of `block`: stored, or counted once per process."""
    stored = stored_block_costs().get((block.key, block.in_shape))
    return (stored.params, stored.flops) if stored is not None else _counted_totals(block)


@functools.lru_cache(maxsize=1024)  # a search asks for params and flops of one architecture in a row
def architecture_totals(spec: ArchSpec, resolution: int) -> tuple[int, int]:
    """``(params, FLOPs)`` of `spec`'s network at `resolution` as sums of its blocks' (fvcore's multiply-adds, as
    `search_spaces.count_flops` counts the built model): a lookup where the block costs are stored."""
    totals = [block_totals(block) for block in decompose(spec, resolution)]
    return sum(p for p, _ in totals), sum(f for _, f in totals)


def block_costs(block: Block, variant: str) -> tuple[tuple[CostProfile, ...], int, int]:
    """``(profiles in `variant`, params, fvcore FLOPs)`` of `block`: stored, or counted once per process."""
    stored = stored_block_costs().get((block.key, block.in_shape))
    if stored is not None and variant in stored.profiles:
        return stored.profiles[variant], stored.params, stored.flops
    params, flops = (stored.params, stored.flops) if stored is not None else _counted_totals(block)
    return _counted(block, variant), params, flops


def _write(path: Path, entries: Mapping[CountKey, BlockCosts]) -> None:
    write_bytes_atomic(path, _encode(dict(entries.items())))
    _read_once.cache_clear()


def store_block_costs(blocks: Iterable[Block], path: Path | None = None, variants: tuple[str, ...] = SHIPPED_VARIANTS,
                      progress: Callable[[Iterable], Iterable] = lambda items: items, save_every: int = 500) -> int:
    """Count the `blocks` not yet in `path` (default `COUNTS_FILE`) and write the merged file whole, every
    `save_every` blocks (an interrupted run keeps what it counted) and at the end; returns how many were
    counted."""
    path = path or COUNTS_FILE
    entries = dict(_read(path).items())
    missing = [b for b in {(b.key, b.in_shape): b for b in blocks}.values()
               if (b.key, b.in_shape) not in entries or set(variants) - set(entries[(b.key, b.in_shape)].profiles)]
    for done, block in enumerate(progress(missing), start=1):
        entries[(block.key, block.in_shape)] = count_block(block, variants)
        if done % save_every == 0:
            _write(path, entries)
    _write(path, entries)
    return len(missing)
