"""launch.py calibrate: a target fitted on its own CSV, bad input, too few models."""
from __future__ import annotations

import pytest

import launch
from search_spaces import TINY_ARCHS

_SMALL_TIMM = ("resnet18", "resnet26", "resnet34", "mobilenetv2_050", "mobilenetv2_100", "mobilenetv3_small_050",
               "mobilenetv3_large_100", "efficientnet_b0", "convnext_atto", "convnext_femto", "vit_tiny_patch16_224",
               "deit_tiny_patch16_224", "regnetx_002", "regnety_002", "ghostnet_100", "mnasnet_050", "lcnet_050",
               "resnet10t", "levit_128s", "efficientvit_m0", "resnet14t", "densenet121", "vgg11", "dla34")


def test_calibrate_fits_a_target_on_its_own_csv_and_its_estimates_say_so(tmp_path, monkeypatch, capsys) -> None:
    from latency_tables import calibration
    from latency_tables.calibration import Sample, load_calibrations
    from latency_tables.gpu_model import Calibration, gpu_rates, profile_seconds
    from latency_tables.targets import get_target
    from latency_tables.timm_bench import count_models
    truth = Calibration("eager", compute={"gemm": 0.7, "conv": 0.55, "dwconv": 0.2, "attention": 0.45},
                        bandwidth={"gemm": 0.6, "conv": 0.5, "dwconv": 0.4, "attention": 0.8, "norm": 0.65,
                                   "elementwise": 0.85}, kernel_flops=1e8, fitted_on="a known L4")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(calibration, "DATA", tmp_path / "data")
    counts = count_models([(name, 64) for name in _SMALL_TIMM])
    rates = gpu_rates(get_target("l4"), "fp16")
    lines = ["model,infer_img_size,infer_samples_per_sec,infer_step_time,infer_batch_size,param_count"]
    for name in _SMALL_TIMM:
        profile = counts[(name, 64)].profiles["eager"]
        ms = 1e3 * profile_seconds(profile, 256, rates, truth)
        lines.append(f"{name},64,{256 / ms * 1e3:.1f},{ms:.6f},256,1.0")
    csv_path = tmp_path / "l4.csv"
    csv_path.write_text("\n".join(lines) + "\n")
    assert launch.main(["calibrate", "--benchmarks", str(csv_path), "--target", "l4"]) == 0
    out = capsys.readouterr().out
    assert "calibrated l4 (eager) on 24 models" in out
    fitted = load_calibrations(calibration.target_calibration_path("l4"))["eager"]
    samples = [Sample(counts[(n, 64)].profiles["eager"], 256, 1.0, rates) for n in _SMALL_TIMM]
    for sample, line in zip(samples, lines[1:]):
        assert profile_seconds(sample.profile, 256, rates, fitted) * 1e3 == pytest.approx(float(line.split(",")[3]),
                                                                                      rel=0.03)
    spec = tmp_path / "arch.json"
    spec.write_text(TINY_ARCHS["tiny_conv"].to_json())
    assert launch.main(["latency", str(spec), "--target", "l4", "--runtime", "eager", "--resolution", "64"]) == 0
    assert "calibrated on l4.csv (24 timm models measured on l4, eager)" in capsys.readouterr().out


@pytest.mark.parametrize("argv, message", [
    (["calibrate", "--benchmarks", "/no/such.csv", "--target", "a100"], "cannot read /no/such.csv"),
    (["calibrate", "--benchmarks", "x.csv", "--target", "cpu"], "calibrate fits a GPU target"),
    (["calibrate", "--benchmarks", "x.csv", "--target", "z80"], "unknown latency target 'z80'"),
])
def test_calibrate_bad_input_is_one_line(argv, message, capsys) -> None:
    assert launch.main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err


def test_calibrate_with_too_few_usable_models_writes_nothing(tmp_path, monkeypatch, capsys) -> None:
    from latency_tables import calibration
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(calibration, "DATA", tmp_path / "data")
    csv_path = tmp_path / "few.csv"
    csv_path.write_text("model,infer_img_size,infer_step_time,infer_batch_size\nresnet18,64,5.0,256\n"
                        "not_a_timm_model,64,5.0,256\n")
    assert launch.main(["calibrate", "--benchmarks", str(csv_path), "--target", "a100"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "1 of 2 rows can be used" in err
    assert not (tmp_path / "data").exists()
