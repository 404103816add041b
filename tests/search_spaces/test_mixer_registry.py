"""A mixer is one registry entry: a new one, defined in this file, is searched, exported and built by timm without
editing the project (README, "A mixer of your own")."""
from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import pytest
import torch
from torch import nn

from search_spaces import (
    MIXER_TYPES, MIXERS, ArchSpec, ConvMixer, DownsampleSpec, HeadSpec, MixerEntry, SpecError, StageSpec, StemSpec,
    build_model, register_mixer,
)
from search_spaces.spec import _check_choice

ROOT = Path(__file__).resolve().parents[2]


# ------------------------------------------------------------------ the worked example: PoolFormer's pooling mixer
@dataclass(frozen=True)
class PoolMixer:
    """PoolFormer (Yu et al., CVPR 2022): token mixing by average pooling, ``pool(x) - x``."""
    kind: ClassVar[str] = "pool"
    pool_size: int = 3

    def validate(self, width: int, field: str) -> None:
        _check_choice(self.pool_size, f"{field}.pool_size", (3, 5))


class PoolBlock(nn.Module):
    """NHWC ``[B, H, W, C]`` in and out: x + (pool(norm x) - norm x), then x + MLP(norm x)."""
    def __init__(self, width: int, mixer: PoolMixer, hidden: int, index: int, drop_path: float = 0.0) -> None:
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(width), nn.LayerNorm(width)
        self.pool = nn.AvgPool2d(mixer.pool_size, stride=1, padding=mixer.pool_size // 2, count_include_pad=False)
        self.mlp = nn.Sequential(nn.Linear(width, hidden), nn.GELU(), nn.Linear(hidden, width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.norm1(x).permute(0, 3, 1, 2)
        x = x + (self.pool(y) - y).permute(0, 2, 3, 1)
        return x + self.mlp(self.norm2(x))


POOL = MixerEntry(
    spec=PoolMixer, build_block=PoolBlock,
    sample=lambda trial, prefix, width, space: PoolMixer(trial.suggest_categorical(f"{prefix}_pool_size", (3, 5))),
    choices=lambda space, width: [PoolMixer(3), PoolMixer(5)])


register_mixer(POOL)  # as a plug-in module does on import: the exported model's module imports this one


@pytest.fixture
def pool_mixer():
    assert MIXERS["pool"] is POOL
    yield POOL
    register_mixer(POOL, replace=True)  # as it was, whatever a test did


def _pool_spec() -> ArchSpec:
    return ArchSpec(stem=StemSpec(stride=4, width=32), head=HeadSpec(10), stages=(
        StageSpec(mixer=PoolMixer(5), width=32, depth=2),
        StageSpec(mixer=ConvMixer(), width=64, depth=1, downsample=DownsampleSpec("conv2x2"))))


def test_a_registered_mixer_is_an_archspec_choice_and_builds(pool_mixer) -> None:
    spec = _pool_spec()
    assert ArchSpec.from_json(spec.to_json()) == spec and spec.stages[0].mixer == PoolMixer(5)
    assert build_model(spec)(torch.randn(2, 3, 33, 33)).shape == (2, 10)
    with pytest.raises(SpecError, match=r"stages\[0\].mixer.pool_size: must be one of 3, 5; got 4"):
        ArchSpec.from_dict({**spec.to_dict(), "stages": [{**spec.to_dict()["stages"][0],
                                                          "mixer": {"kind": "pool", "pool_size": 4}}]})


def test_an_unregistered_kind_and_a_taken_kind_are_refused(pool_mixer) -> None:
    with pytest.raises(SpecError, match="mixer kind 'pool' is already registered"):
        register_mixer(MixerEntry(PoolMixer, PoolBlock, POOL.sample, lambda space, width: []))
    stored = _pool_spec().to_dict()
    del MIXERS["pool"], MIXER_TYPES["pool"]
    with pytest.raises(SpecError, match="stages\\[0\\].mixer.kind: must be one of 'conv'"):
        ArchSpec.from_dict(stored)  # a spec of a mixer this process does not know


def test_a_new_mixer_is_searched_exported_and_created_by_timm(pool_mixer, tmp_path) -> None:
    from latency_tables.blocks import space_blocks
    from nas.config import SearchConfig
    from nas.search import run_search
    from search_spaces import load_space

    space_file = tmp_path / "space.json"
    space_file.write_text(json.dumps({"base": "cifar", "mixers": ["pool"], "num_stages": [2],
                                      "widths": [[32], [64]], "depths": [[1, 2], [1]]}))
    space = load_space(space_file)
    pool_blocks = [b for b in space_blocks(space, 32) if '"kind":"pool"' in b.key]
    assert {json.loads(b.description)["mixer"]["pool_size"] for b in pool_blocks} == {3, 5}  # tables measure both
    config = SearchConfig(target="a100", budget_ms=100.0, resolution=32, space=str(space_file), proxy="params",
                          trials=12, out=tmp_path / "run", top_k=0, onnx=True, sampler="random")
    summary = run_search(config, progress=False)
    assert summary.trials["feasible"] > 0 and summary.best["arch"]["stages"][0]["mixer"]["kind"] == "pool"
    (folder,) = map(Path, summary.exports)
    assert json.loads((folder / "export.json").read_text())["onnx"]["error"] is None
    script = f"""
import sys
sys.path[:0] = [{str(ROOT)!r}, {str(Path(__file__).parent)!r}, {str(folder)!r}]
import torch, {folder.name}, timm
model = timm.create_model("{folder.name}", num_classes=3).eval()
print(tuple(model(torch.randn(2, 3, 32, 32)).shape), sorted({{s.mixer.kind for s in {folder.name}.SPEC.stages}}))
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().splitlines()[-1] == "(2, 3) ['pool']"
