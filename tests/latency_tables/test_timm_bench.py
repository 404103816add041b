"""timm benchmark CSVs: reading them, refusing bad ones in one line, counting their models."""
from __future__ import annotations

from pathlib import Path

import pytest

from latency_tables.timm_bench import BenchmarkError, count_models, count_timm_model, model_family, read_benchmark_csv

HEADER = "model,infer_img_size,infer_samples_per_sec,infer_step_time,infer_batch_size,param_count,infer_gmacs\n"
SHARED = Path(__file__).resolve().parents[3] / "shared/data/timm-bench"


def _csv(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "bench.csv"
    path.write_text(text)
    return path


def test_rows_are_read_with_their_numbers(tmp_path) -> None:
    rows = read_benchmark_csv(_csv(tmp_path, HEADER + "resnet18,224,10000,51.2,512,11.69,1.82\n"
                                             "vit_tiny_patch16_224,224,9000,113.8,1024,5.72,1.26\n"))
    assert [(r.model, r.img_size, r.batch, r.step_ms) for r in rows] == [("resnet18", 224, 512, 51.2),
                                                                        ("vit_tiny_patch16_224", 224, 1024, 113.8)]
    assert rows[0].gmacs == 1.82 and rows[0].key == ("resnet18", 224)


@pytest.mark.parametrize("text, message", [
    ("model,infer_img_size\nresnet18,224\n", "missing column(s) infer_batch_size, infer_step_time"),
    (HEADER + "resnet18,224,10000,0,512,11.69,1.82\n", "line 2: infer_step_time must be a positive number"),
    (HEADER + "resnet18,224,10000,abc,512,11.69,1.82\n", "line 2: infer_step_time is 'abc', not a number"),
    (HEADER + "resnet18,224,10000,nan,512,11.69,1.82\n", "must be a positive number"),
    (HEADER + ",224,10000,5,512,11.69,1.82\n", "line 2: empty model name"),
    (HEADER, "no rows"),
])
def test_bad_csvs_are_one_line_errors(tmp_path, text, message) -> None:
    with pytest.raises(BenchmarkError, match=message.replace("(", r"\(").replace(")", r"\)")):
        read_benchmark_csv(_csv(tmp_path, text))


def test_unreadable_files_are_one_line_errors(tmp_path) -> None:
    with pytest.raises(BenchmarkError, match="cannot read"):
        read_benchmark_csv(tmp_path / "missing.csv")
    binary = tmp_path / "binary.csv"
    binary.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(BenchmarkError, match="cannot read"):
        read_benchmark_csv(binary)


def test_unknown_models_come_back_as_errors_and_known_ones_are_cached(tmp_path) -> None:
    assert count_timm_model("no_such_model_anywhere", 224).error == "not a model of this timm version"
    cache = tmp_path / "counts.json.gz"
    counts = count_models([("resnet18", 64), ("no_such_model_anywhere", 64)], path=cache)
    assert counts[("resnet18", 64)].profiles is not None and counts[("resnet18", 64)].params == 11_689_512
    assert counts[("no_such_model_anywhere", 64)].profiles is None
    calls = []
    again = count_models([("resnet18", 64)], path=cache, progress=lambda keys: calls.extend(keys) or keys)
    assert calls == [] and again[("resnet18", 64)].profiles == counts[("resnet18", 64)].profiles


def test_model_families_are_the_leading_word() -> None:
    assert model_family("swin_tiny_patch4_window7_224") == "swin"
    assert model_family("convnextv2_nano.fcmae_ft_in22k") == "convnextv2"


@pytest.mark.skipif(not SHARED.exists(), reason="the shared timm benchmark files are not on this machine")
def test_the_public_files_read_whole() -> None:
    for path in sorted(SHARED.glob("*.csv")):
        rows = read_benchmark_csv(path)
        assert len(rows) > 1000 and all(r.batch >= 1 and r.step_ms > 0 for r in rows)
