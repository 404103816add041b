from __future__ import annotations

import gzip
import json
import random

import pytest
import torch

from latency_tables import cost_cache, estimate
from latency_tables.blocks import block_params, decompose, space_blocks
from latency_tables.cost_cache import COUNTS_FILE, store_counts, stored_counts
from latency_tables.estimate import block_cost, count_block
from search_spaces import DEFAULT_SPACE, TINY_ARCHS

BATCH = 3


def _blocks():
    return {(b.key, b.in_shape, BATCH): b for b in decompose(TINY_ARCHS["tiny_window"], 40)}


def test_stored_counts_round_trip_and_only_missing_ones_are_counted(tmp_path):
    path, blocks = tmp_path / "counts.json.gz", _blocks()
    counted: list = []

    def count(key):
        counted.append(key)
        return count_block(blocks[key], BATCH)

    assert store_counts(blocks, count, path) == len(blocks) == len(counted)
    stored = stored_counts(path)
    assert stored == {key: count_block(block, BATCH) for key, block in blocks.items()}
    assert store_counts(blocks, count, path) == 0 and len(counted) == len(blocks)  # nothing counted twice
    assert not list(tmp_path.glob(".counts*"))  # no temporary file left behind


def test_counts_of_another_torch_version_or_a_corrupt_file_are_ignored(tmp_path):
    path = tmp_path / "counts.json.gz"
    with gzip.open(path, "wt") as handle:
        json.dump({"torch": "1.0.0", "entries": [["k", [3, 8, 8], 1, 1.0, 2, 3, 4]]}, handle)
    assert cost_cache._read(path) == {}
    path.write_bytes(b"not gzip at all")
    assert cost_cache._read(path) == {}
    assert cost_cache._read(tmp_path / "missing.json.gz") == {}


def test_block_cost_takes_stored_counts_without_counting(tmp_path, monkeypatch):
    path, blocks = tmp_path / "counts.json.gz", _blocks()
    store_counts(blocks, lambda key: count_block(blocks[key], BATCH), path)
    expected = {key: block_cost(block, BATCH, "bf16") for key, block in blocks.items()}
    estimate._block_cost_cached.cache_clear()
    monkeypatch.setattr(cost_cache, "COUNTS_FILE", path)

    def no_counting(*args):
        raise AssertionError("counted a stored block")
    monkeypatch.setattr(estimate, "count_block", no_counting)
    try:
        assert {key: block_cost(block, BATCH, "bf16") for key, block in blocks.items()} == expected
    finally:
        estimate._block_cost_cached.cache_clear()


def test_costs_command_stores_every_block_of_the_space(tmp_path, monkeypatch, capsys):
    import launch
    path = tmp_path / "counts.json.gz"
    monkeypatch.setattr(cost_cache, "COUNTS_FILE", path)
    monkeypatch.setattr(estimate, "count_block", lambda block, batch: (1.0, 1, 1, 1))  # the counting is tested above
    assert launch.main(["costs", "--resolution", "32", "--batch", "2"]) == 0
    blocks = space_blocks(DEFAULT_SPACE, 32)
    assert set(stored_counts(path)) == {(b.key, b.in_shape, 2) for b in blocks}
    assert f"counted {len(blocks)} blocks" in capsys.readouterr().out


@pytest.mark.skipif(not COUNTS_FILE.exists(), reason="no shipped counts")
def test_shipped_counts_match_a_fresh_count():
    """Catches counts gone stale after a change to a mixer: 25 random shipped entries, counted again."""
    stored = stored_counts()
    assert stored, "the shipped counts were written by another torch version: rerun python launch.py costs"
    blocks = {(b.key, b.in_shape, 1): b for b in space_blocks(DEFAULT_SPACE, 224)}
    for key in random.Random(0).sample(sorted(stored), 25):
        assert stored[key] == count_block(blocks[key], key[2]), key
        with torch.device("meta"):  # the parameter count read from them is the module's
            params = sum(p.numel() for p in blocks[key].build().parameters())
        block_params.cache_clear()
        assert block_params(blocks[key]) == params, key
