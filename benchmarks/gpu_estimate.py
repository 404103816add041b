"""How right is a GPU latency estimate without that GPU? Held out against timm's public GPU benchmarks.

Every timm model of the files in ``../shared/data/timm-bench/`` (timm's ``benchmark.py``: AMP, NCHW, batch 1024
mostly) is counted on the meta device with the counter the project's blocks use (`latency_tables.counting`, as
an fp32 model under fp16 autocast) and predicted by `latency_tables.gpu_model` with a calibration fitted on
other measurements only:

- transfer, eager: fitted on the RTX 3090 file alone, predicting the RTX 4090 file (same software, pt240), by the
  GPUs' public specs; no 4090 measurement is used;
- transfer, compiled: fitted on the pt240 RTX 4090 ``-dynamo`` file, predicting the pt291 one (the only compiled
  files here are one GPU's);
- leave one family out (every ``swin_*``, ``convnext*``... held out in turn, the rest fitted) on the pt291 RTX
  4090 eager file, and within each compiled file.

Per case: the share of models within ±10/15/25%, median |error|, Spearman, over all models and over the families
this space mirrors (swin, convnext, shvit; efficientvit for L2ViT's ReLU linear attention, maxvit's grid
attention for CSWin's stripes, volo's outlook attention for QnA's learned local queries). Then the project's
reference architectures next to their timm twins: params and GMACs, and predicted against the twin's measured
time on each GPU. With ``--write-calibration`` the shipped calibration is refitted on every file of each runtime
and written to ``latency_tables/data/gpu-calibration.json`` with its provenance.

    python benchmarks/gpu_estimate.py [--write-calibration]   -> benchmarks/results/gpu-estimate.json
"""
from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
from tqdm import tqdm  # noqa: E402

from benchmarks._io import write_json_atomic  # noqa: E402
from latency_tables.calibration import (  # noqa: E402
    Sample, fit, fit_errors, prediction_errors, shipped_calibration_path, store_calibrations,
)
from latency_tables.gpu_model import gpu_rates, profile_seconds  # noqa: E402
from latency_tables.profile import profile_module  # noqa: E402
from latency_tables.targets import get_target  # noqa: E402
from latency_tables.timm_bench import (  # noqa: E402
    TIMM_COUNT_BATCH, count_models, model_family, read_benchmark_csv,
)
from search_spaces import REFERENCE_ARCHS, build_model, count_flops, count_params  # noqa: E402

BENCH = ROOT.parent / "shared/data/timm-bench"
OUT = ROOT / "benchmarks/results/gpu-estimate.json"
# file key -> (file name, target, runtime)
FILES = {
    "rtx3090-pt240-eager": ("benchmark-infer-amp-nchw-pt240-cu124-rtx3090.csv", "rtx3090", "eager"),
    "rtx4090-pt240-eager": ("benchmark-infer-amp-nchw-pt240-cu124-rtx4090.csv", "rtx4090", "eager"),
    "rtx4090-pt291-eager": ("benchmark-infer-amp-nchw-pt291-cu128-4090.csv", "rtx4090", "eager"),
    "rtx4090-pt240-compiled": ("benchmark-infer-amp-nchw-pt240-cu124-rtx4090-dynamo.csv", "rtx4090", "compiled"),
    "rtx4090-pt291-compiled": ("benchmark-infer-amp-nchw-pt291-cu128-4090-dynamo.csv", "rtx4090", "compiled"),
}
TRANSFER = {"eager": ("rtx3090-pt240-eager", "rtx4090-pt240-eager"),
            "compiled": ("rtx4090-pt240-compiled", "rtx4090-pt291-compiled")}
LOFO = {"eager": ("rtx4090-pt291-eager",), "compiled": ("rtx4090-pt240-compiled", "rtx4090-pt291-compiled")}
MIRRORED = {"swin": "swin", "convnext": "convnext", "shvit": "shvit", "efficientvit": "l2vit (ReLU linear attention)",
            "maxvit": "cswin (axial grid attention)", "volo": "qna (learned local attention)"}
TWINS = {"swin_t_like": "swin_tiny_patch4_window7_224", "convnext_t_like": "convnext_tiny", "shvit_s1_like": "shvit_s1"}
GOAL = {"within_15": 0.90, "median_abs_error": 0.07, "spearman": 0.95}


def load_samples(keys: list[str]) -> dict[str, list[Sample]]:
    """Samples of every file in `keys` (models that do not build on the meta device are left out)."""
    rows = {key: read_benchmark_csv(BENCH / FILES[key][0]) for key in keys}
    wanted = [row.key for file_rows in rows.values() for row in file_rows]
    counts = count_models(wanted, progress=lambda items: tqdm(items, desc="counting timm models", unit="model"))
    samples = {}
    for key, file_rows in rows.items():
        _, target, runtime = FILES[key]
        rates = gpu_rates(get_target(target), "fp16")
        samples[key] = [Sample(counts[r.key].profiles[runtime], r.batch, r.step_ms, rates, r.model)
                        for r in file_rows if counts[r.key].profiles is not None and r.batch >= TIMM_COUNT_BATCH]
    return samples


def _restricted(samples: list[Sample], families) -> list[Sample]:
    return [s for s in samples if model_family(s.label) in families]


def case_result(calibration, samples: list[Sample]) -> dict:
    result = fit_errors(calibration, samples)
    mirrored = _restricted(samples, MIRRORED)
    result["mirrored_families"] = fit_errors(calibration, mirrored) if len(mirrored) > 2 else None
    return result


def leave_one_family_out(samples: list[Sample], runtime: str) -> dict:
    """Each family with at least 3 models held out in turn; errors over all held-out predictions."""
    families = sorted({model_family(s.label) for s in samples})
    big = [f for f in families if sum(model_family(s.label) == f for s in samples) >= 3]
    predictions: list[tuple[Sample, float]] = []
    for family in tqdm(big, desc=f"leave one family out ({runtime})", unit="family"):
        train = [s for s in samples if model_family(s.label) != family]
        calibration = fit(train, runtime, f"all but {family}")
        predictions += [(s, 1e3 * profile_seconds(s.profile, s.batch, s.rates, calibration))
                        for s in samples if model_family(s.label) == family]
    return _errors(predictions) | {"families_held_out": len(big),
                                   "mirrored_families": _errors([(s, p) for s, p in predictions
                                                                 if model_family(s.label) in MIRRORED])}


def _errors(predictions: list[tuple[Sample, float]]) -> dict:
    return prediction_errors([p for _, p in predictions], [s.measured_ms for s, _ in predictions])


def twins(calibrations: dict, samples: dict[str, list[Sample]]) -> list[dict]:
    """The project's reference archs next to their timm twins: cost parity, and predicted vs the twin measured."""
    out = []
    for name, twin in TWINS.items():
        spec = REFERENCE_ARCHS[name]
        profiles = profile_module(lambda: build_model(spec), (3, 224, 224), torch.float32, False,
                                  base=TIMM_COUNT_BATCH, autocast=torch.float16)
        entry = {"arch": name, "timm": twin, "params_m": count_params(spec) / 1e6,
                 "gmacs": count_flops(spec, 224) / 1e9, "gpus": {}}
        for key, file_samples in samples.items():
            _, target, runtime = FILES[key]
            row = next((r for r in read_benchmark_csv(BENCH / FILES[key][0]) if r.model == twin and r.img_size == 224),
                       None)
            if row is None or runtime not in calibrations:
                continue
            entry["timm_params_m"], entry["timm_gmacs"] = row.params_m, row.gmacs
            rates = gpu_rates(get_target(target), "fp16")
            predicted = 1e3 * profile_seconds(profiles[runtime], row.batch, rates, calibrations[runtime])
            entry["gpus"][key] = {"batch": row.batch, "measured_ms": row.step_ms, "predicted_ms": predicted,
                                  "error": predicted / row.step_ms - 1}
        out.append(entry)
    return out


COLD_PREDICT = """
import time, sys
sys.path.insert(0, {root!r})
started = time.perf_counter()
from latency_tables import predict
from search_spaces import REFERENCE_ARCHS
imported = time.perf_counter()
prediction = predict(REFERENCE_ARCHS["swin_t_like"], "a100", batch=1024)
print(imported - started, time.perf_counter() - imported, prediction.latency_ms)
"""


def cold_predict() -> dict:
    """A fresh process's first ``predict(swin_t_like, "a100", batch=1024)``: import time and predict time (s)."""
    import subprocess
    out = subprocess.run([sys.executable, "-c", COLD_PREDICT.format(root=str(ROOT))], capture_output=True, text=True,
                         check=True).stdout.split()
    return {"import_s": float(out[0]), "predict_s": float(out[1]), "latency_ms": float(out[2]),
            "what": "predict(REFERENCE_ARCHS['swin_t_like'], 'a100', batch=1024) in a fresh process (goal < 0.5 s)"}


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write-calibration", action="store_true",
                        help=f"refit on every file of each runtime and write {shipped_calibration_path().name}")
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--cold-predict-only", action="store_true",
                        help="time only a fresh process's first GPU prediction and update that field of --out")
    args = parser.parse_args(argv)
    if args.cold_predict_only:
        result = json.loads(args.out.read_text())
        result["cold_predict"] = cold_predict()
        write_json_atomic(args.out, result)
        print(f"cold predict: import {result['cold_predict']['import_s']:.2f} s, "
              f"predict {result['cold_predict']['predict_s']:.3f} s")
        return 0
    if not BENCH.exists():
        print(f"error: {BENCH} not found (timm's public benchmark files)", file=sys.stderr)
        return 2
    torch.set_num_threads(1)
    started = time.perf_counter()
    samples = load_samples(list(FILES))
    result: dict = {"files": {key: {"file": FILES[key][0], "target": FILES[key][1], "runtime": FILES[key][2],
                                    "models": len(s)} for key, s in samples.items()},
                    "goal": GOAL, "mirrored_families": MIRRORED, "transfer": {}, "leave_one_family_out": {}}
    transfer_fits = {}
    for runtime, (train, test) in TRANSFER.items():
        calibration = fit(samples[train], runtime, train)
        transfer_fits[runtime] = calibration
        result["transfer"][runtime] = {"fitted_on": train, "predicting": test, "calibration": calibration.to_dict(),
                                       "in_sample": fit_errors(calibration, samples[train]),
                                       "held_out": case_result(calibration, samples[test])}
    for runtime, keys in LOFO.items():
        result["leave_one_family_out"][runtime] = {key: leave_one_family_out(samples[key], runtime) for key in keys}
    result["reference_twins"] = twins(transfer_fits, samples)
    if args.write_calibration:
        shipped = {}
        for runtime in ("eager", "compiled"):
            keys = [k for k in FILES if FILES[k][2] == runtime]
            gpus = sorted({FILES[k][1] for k in keys})
            fitted_on = (f"public timm benchmarks of {' and '.join(g.upper().replace('RTX', 'RTX ') for g in gpus)}"
                         f" ({runtime}, AMP, {len(keys)} files)")
            calibration = fit([s for k in keys for s in samples[k]], runtime, fitted_on)
            shipped[runtime] = calibration
        provenance = {"source": "huggingface/pytorch-image-models results/ (snapshot of 2026-08-08), Apache-2.0",
                      "files": {FILES[k][0]: _sha256(BENCH / FILES[k][0]) for k in FILES},
                      "counted_with": {"torch": torch.__version__, "timm": __import__("timm").__version__},
                      "held_out": {r: result["transfer"][r]["held_out"] for r in result["transfer"]},
                      "fitted": time.strftime("%Y-%m-%d"), "command": "python benchmarks/gpu_estimate.py "
                                                                      "--write-calibration"}
        store_calibrations(shipped_calibration_path(), shipped, provenance)
        result["shipped_calibration"] = {r: c.to_dict() for r, c in shipped.items()}
    if shipped_calibration_path().exists():  # a fresh process's first GPU estimate stands on it
        result["cold_predict"] = cold_predict()
    result["seconds"] = round(time.perf_counter() - started, 1)
    result["date"] = time.strftime("%Y-%m-%d")
    write_json_atomic(args.out, result)
    for runtime, entry in result["transfer"].items():
        held = entry["held_out"]
        print(f"transfer {runtime}: {entry['fitted_on']} -> {entry['predicting']}: {held['models']} models, "
              f"±15% {held['within_15']:.0%}, ±10% {held['within_10']:.0%}, median {held['median_abs_error']:.1%}, "
              f"Spearman {held['spearman']:.3f}")
    for runtime, files in result["leave_one_family_out"].items():
        for key, entry in files.items():
            print(f"leave one family out {runtime} {key}: ±15% {entry['within_15']:.0%}, median "
                  f"{entry['median_abs_error']:.1%}, Spearman {entry['spearman']:.3f}")
    for twin in result["reference_twins"]:
        errors = ", ".join(f"{k} {v['error']:+.0%}" for k, v in twin["gpus"].items())
        print(f"{twin['arch']} vs {twin['timm']}: {twin['params_m']:.2f}M/{twin['gmacs']:.3f}G vs "
              f"{twin.get('timm_params_m')}M/{twin.get('timm_gmacs')}G; {errors}")
    if "cold_predict" in result:
        cold = result["cold_predict"]
        print(f"cold predict of swin_t_like on a100 at batch 1024: {cold['predict_s']:.3f} s after "
              f"{cold['import_s']:.1f} s of imports")
    print(f"-> {args.out} ({result['seconds']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
