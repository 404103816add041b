"""Block costs: counted once, stored whole, looked up; a stale shipped file fails here."""
from __future__ import annotations

import gzip
import json
import random

import pytest
import torch

from latency_tables import block_costs
from latency_tables.block_costs import (
    COUNTS_FILE, SHIPPED_VARIANTS, count_block, store_block_costs, stored_block_costs, variant_name,
)
from latency_tables.blocks import decompose, space_blocks
from search_spaces import DEFAULT_SPACE, TINY_ARCHS, build_model, count_flops


def _blocks():
    return {(b.key, b.in_shape): b for b in decompose(TINY_ARCHS["tiny_window"], 40)}


def test_stored_costs_round_trip_and_only_missing_blocks_are_counted(tmp_path, monkeypatch) -> None:
    path, blocks = tmp_path / "counts.json.gz", _blocks()
    counted: list = []
    real = block_costs.count_block
    monkeypatch.setattr(block_costs, "count_block", lambda block, variants: counted.append(block) or real(block,
                                                                                                           variants))
    assert store_block_costs(blocks.values(), path) == len(blocks) == len(counted)
    stored = stored_block_costs(path)
    assert stored == {key: real(block, SHIPPED_VARIANTS) for key, block in blocks.items()}
    assert store_block_costs(blocks.values(), path) == 0 and len(counted) == len(blocks)  # nothing counted twice
    assert not list(tmp_path.glob(".counts*"))  # no temporary file left behind


def test_costs_of_another_torch_version_or_a_damaged_file_are_ignored(tmp_path) -> None:
    path = tmp_path / "counts.json.gz"
    with gzip.open(path, "wt") as handle:
        json.dump({"format": 2, "torch": "1.0.0", "blocks": []}, handle)
    assert block_costs._read(path) == {}
    path.write_bytes(b"not gzip at all")
    assert block_costs._read(path) == {}
    assert block_costs._read(tmp_path / "missing.json.gz") == {}


def test_params_and_flops_of_the_blocks_sum_to_the_built_models() -> None:
    for spec in TINY_ARCHS.values():
        blocks = decompose(spec, 32)
        costs = [count_block(b, ()) for b in blocks]
        assert sum(c.params for c in costs) == sum(p.numel() for p in build_model(spec).parameters())
        assert sum(c.flops for c in costs) == count_flops(spec, resolution=32)


def test_variant_names_follow_the_table_settings() -> None:
    assert variant_name("triton", "compiled", "bf16") == variant_name("triton", "compiled", "fp16") == \
        "triton-compiled-half"
    assert variant_name("torch", "eager", "fp32") == "torch-eager-fp32"
    with pytest.raises(ValueError, match="no cost variant"):
        variant_name("cuda", "eager", "fp32")


def test_costs_command_stores_every_block_of_the_space(tmp_path, monkeypatch, capsys) -> None:
    import launch
    from latency_tables.block_costs import BlockCosts
    path = tmp_path / "counts.json.gz"
    monkeypatch.setattr(block_costs, "COUNTS_FILE", path)
    monkeypatch.setattr(block_costs, "count_block", lambda block, variants: BlockCosts({}, 1, 2))  # counted above
    assert launch.main(["costs", "--resolution", "32", "--space", "cifar"]) == 0
    from search_spaces import CIFAR_SPACE
    blocks = space_blocks(CIFAR_SPACE, 32)
    assert set(stored_block_costs(path)) == {(b.key, b.in_shape) for b in blocks}
    assert f"counted {len(blocks)} blocks" in capsys.readouterr().out


@pytest.mark.skipif(not COUNTS_FILE.exists(), reason="no shipped counts")
def test_shipped_costs_match_a_fresh_count() -> None:
    """Catches counts gone stale after a change to a mixer or the counter: 12 random shipped blocks, counted
    again."""
    stored = stored_block_costs()
    assert stored, "the shipped counts were written by another torch version: rerun python launch.py costs"
    from search_spaces import CIFAR_SPACE
    blocks = {(b.key, b.in_shape): b for b in space_blocks(DEFAULT_SPACE, 224) + space_blocks(CIFAR_SPACE, 32)}
    for key in random.Random(0).sample(sorted(stored), 12):
        assert stored[key] == count_block(blocks[key], SHIPPED_VARIANTS), key
        with torch.device("meta"):
            assert stored[key].params == sum(p.numel() for p in blocks[key].build().parameters())
