"""Export a study's winners as timm backbones: ``<out>/exports/<study>/<model name>/``.

Each folder holds
- ``arch.json``: the `ArchSpec` (versioned JSON);
- ``<model name>.py``: a module that registers the backbone with timm on import, so that
  ``timm.create_model("<model name>", num_classes=..., features_only=...)`` works. It needs the model definitions
  (`search_spaces`), not the search (`nas`, Optuna, Ray);
- ``MODEL_CARD.md``: target, budget, predicted latency with its per-stage breakdown and source, measured latency
  where the target is this machine, params, FLOPs (fvcore), proxy scores, and the command that found it;
- ``pareto.png``: the study's proxy-vs-latency picture, with the exported architectures marked;
- ``model.onnx`` (unless ``onnx=False``): the network as deployed, at its initial weights, checked with
  onnxruntime (`nas.onnx_export`; the card gives the check's difference, and onnxruntime's latency where the
  target is this machine). A network the exporter cannot handle says why in the card; the rest still lands.

A folder is written in a staging sibling and renamed into place, so a crash never leaves a partial export. The
folders of an earlier export set that the new one does not hold move to ``superseded/`` beside them.
"""
from __future__ import annotations

import logging
import os
import re
import shutil
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path

import optuna
import torch

from common.errors import UserFacingError
from common.files import ensure_folder, replace_dir_atomic, write_json_atomic
from latency_tables import NETWORK_PASSES, TableMeasurer, TargetUnavailableError, open_table
from nas.onnx_export import OnnxResult, export_onnx, onnxruntime_ms
from nas.trial_record import TrialRecord, best_record, pareto_records, records
from search_spaces import ArchSpec, build_model, count_flops, count_params, fold_batchnorm, mixer_entry

__all__ = ["ExportError", "Exported", "export_study", "export_record", "model_name", "choose", "plot_pareto",
           "set_aside_superseded"]

_log = logging.getLogger(__name__)
SUPERSEDED = "superseded"  # under exports/<study>/: earlier export sets' folders


class ExportError(UserFacingError, RuntimeError):
    """Nothing to export (no feasible trial), or the export folder cannot be written."""


@dataclass(frozen=True)
class Exported:
    name: str
    path: Path
    trial: int
    role: str  # "best" | "pareto"


def model_name(study: str, trial: int) -> str:
    """timm name of an exported architecture: ``hnas_<study>_t<trial>`` with every other character an ``_``."""
    return f"hnas_{re.sub(r'[^0-9a-zA-Z]+', '_', study).strip('_').lower()}_t{trial:04d}"


def choose(rows: list[TrialRecord], top_k: int) -> list[tuple[TrialRecord, str]]:
    """The best feasible trial, then up to `top_k` other Pareto trials spread evenly along the front's latency."""
    best = best_record(rows)
    if best is None:
        return []
    others = [r for r in pareto_records(rows) if r.number != best.number]
    if top_k < len(others):
        step = len(others) / top_k if top_k else 0
        others = [others[int(i * step)] for i in range(top_k)]
    return [(best, "best")] + [(r, "pareto") for r in others]


# ------------------------------------------------------------------------------------------------ contents
_MODULE = '''"""{name}: a hybrid vision backbone found by hybrid-nas (study {study!r}, trial {trial}).

    import {name}                      # registers the model with timm
    model = timm.create_model("{name}", num_classes=1000)
    features = timm.create_model("{name}", features_only=True, out_indices=(1, 3))

Predicted latency on {target}: {latency_ms:.3f} ms (budget {budget_ms:g} ms; {source}).
Needs the model definitions of hybrid-nas (the `search_spaces` package), not its search code.
"""
{mixer_imports}from search_spaces import ArchSpec, register_arch

NAME = "{name}"
ARCH_JSON = r"""{arch_json}"""
SPEC = ArchSpec.from_json(ARCH_JSON)
create_model = register_arch(NAME, SPEC, resolution={resolution})
'''


def _module_source(name: str, row: TrialRecord, attrs: dict) -> str:
    modules = sorted({mixer_entry(stage.mixer.kind).module for stage in row.spec.stages} - {"search_spaces.spec"})
    mixer_imports = "".join(f"import {module}  # registers its mixer\n" for module in modules)
    return _MODULE.format(name=name, study=attrs["study"], trial=row.number, target=attrs["target"],
                          latency_ms=row.latency_ms, budget_ms=attrs["budget_ms"], source=row.latency_source,
                          arch_json=row.spec.to_json(), resolution=attrs.get("resolution", 224),
                          mixer_imports=mixer_imports)


def _measured_here(spec: ArchSpec, attrs: dict) -> str | None:
    """End-to-end latency on this machine when it is the target (else None): the median of `NETWORK_PASSES`
    timings in a row, a guard against one timing caught in a slow spell of a shared CPU (seconds long: the passes
    do not average over minutes as `latency_tables.measure.time_networks` does)."""
    try:
        table = open_table(attrs["target"], db=None, batch=attrs.get("batch"), resolution=attrs.get("resolution"),
                           dtype=attrs.get("dtype"), create=False, runtime=attrs.get("runtime"))
        timing = TableMeasurer(table).measure_network(spec, passes=NETWORK_PASSES)
    except TargetUnavailableError:
        return None
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return (f"{timing.median_ms:.3f} ms median end to end on this machine (p20 {timing.p20_ms:.3f}, p80 "
            f"{timing.p80_ms:.3f}; median of {NETWORK_PASSES} timings, {timing.repeats} repeats; load average "
            f"{load:.1f} on {os.cpu_count()} CPUs then: other processes inflate CPU timings)")


def _table_fit_line(attrs: dict) -> str:
    """The card's line on whether the (CPU) table fitted the search's machine, where it was checked."""
    fit = attrs.get("latency_table_fit")
    return "" if fit is None else f"\n- Table check before the search: {fit['summary']}"


def _onnx_lines(onnx: OnnxResult | None, onnx_ms: float | None, attrs: dict) -> str:
    if onnx is None:
        return "- not written (exported with --no-onnx)"
    if onnx.error is not None:
        return f"- `model.onnx` not written: {onnx.error}"
    latency = (f"\n- onnxruntime (CPU) on this machine: {onnx_ms:.3f} ms median at batch {attrs.get('batch')}"
               if onnx_ms is not None else "")
    return (f"- `model.onnx`: opset {onnx.opset}, input `images` float32 [batch, 3, {attrs.get('resolution', 224)}, "
            f"{attrs.get('resolution', 224)}] (batch dynamic), output `logits`; BatchNorm folded, the mixers' "
            f"PyTorch reference path, initial weights (export your trained model with "
            f"`nas.onnx_export.export_onnx(model, resolution, path)`)\n"
            f"- Checked with onnxruntime against PyTorch on the same images: max |difference| "
            f"{onnx.max_abs_diff:.2e}{latency}")


def _model_card(name: str, row: TrialRecord, role: str, attrs: dict, params: int, flops: int,
                measured: str | None, onnx: OnnxResult | None = None, onnx_ms: float | None = None) -> str:
    resolution = attrs.get("resolution", 224)
    folds = sum(isinstance(m, torch.nn.BatchNorm2d) for m in build_model(row.spec).modules()) - \
        sum(isinstance(m, torch.nn.BatchNorm2d) for m in fold_batchnorm(build_model(row.spec)).modules())
    runtime_note = ("; compiled: `torch.compile(model)`, which the estimate models" if attrs.get("runtime") ==
                    "compiled" else "")
    stages = "\n".join(f"| {stage} | {ms:.4f} |" for stage, ms in row.breakdown_ms.items())
    mixers = ", ".join(f"{s.mixer.kind} x{s.depth} ({s.width} ch)" for s in row.spec.stages)
    proxies = "\n".join(f"| {key} | {value:.6g} |" for key, value in (
        (f"{attrs['proxy']} (search objective)", row.proxy),) if value is not None)
    return f"""# {name}

{'Best architecture within the budget' if role == 'best' else 'A Pareto-optimal architecture (proxy vs latency)'}
of study `{attrs['study']}`, trial {row.number}. Stages: {mixers}.

```python
import {name}   # this folder on sys.path; registers the backbone with timm
import timm
model = timm.create_model("{name}", num_classes=1000)
```

## Latency on `{attrs['target']}` (batch {attrs.get('batch')}, {resolution}x{resolution}, {attrs.get('dtype')}, \
{attrs.get('runtime', 'eager')} runtime)
- Budget: {attrs['budget_ms']:g} ms
- Predicted: **{row.latency_ms:.3f} ms** — {row.latency_source}
- Latency table: `{attrs.get('latency_table')}`{_table_fit_line(attrs)}
- Measured: {measured or 'not measured (this machine is not the target)'}
- As deployed: BatchNorm folded into the convolutions before it (RepViT and SHViT Conv-BN, RepViT's mixer into one
  depthwise 3x3): the latency assumes `search_spaces.fold_batchnorm(model)` after training; without it the
  network runs {folds} more BatchNorm kernels{runtime_note}.

| part | predicted ms |
| --- | ---: |
{stages}

## Cost
- Params: {params / 1e6:.3f} M
- FLOPs: {flops / 1e9:.4f} G multiply-adds at {resolution}x{resolution} (fvcore, attention and softmax included)

## ONNX
{_onnx_lines(onnx, onnx_ms, attrs)}

## Proxy scores (higher is predicted more accurate)
| proxy | value |
| --- | ---: |
{proxies}

## How it was found
- Sampler: {attrs.get('sampler')}, objective: {attrs.get('objective')}, seed {attrs.get('seed')}
- Data: {attrs.get('data') or 'none (data-free proxy)'}
- Command: `{attrs.get('command') or 'unknown'}`
- Study storage: `{attrs.get('storage')}`

![Pareto front of the study](pareto.png)
"""


def plot_pareto(rows: list[TrialRecord], attrs: dict, marked: list[tuple[TrialRecord, str]], path: Path) -> None:
    """Proxy vs predicted latency of every evaluated trial, the feasible front, the budget and the exports."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    evaluated = [r for r in rows if r.proxy is not None and r.latency_ms is not None and r.duplicate_of is None]
    front = pareto_records(rows)
    over = sum(r.state == "PRUNED" for r in rows)
    figure, axes = plt.subplots(figsize=(7, 4.5), dpi=110)
    axes.scatter([r.latency_ms for r in evaluated], [r.proxy for r in evaluated], s=14, alpha=0.5,
                 label=f"evaluated ({len(evaluated)})")
    if front:
        axes.step([r.latency_ms for r in front], [r.proxy for r in front], where="post", color="tab:orange",
                  label="Pareto front (feasible)")
    for row, role in marked:
        axes.scatter([row.latency_ms], [row.proxy], marker="*", s=160, color="tab:red" if role == "best" else
                     "tab:green", zorder=3)
        axes.annotate(f"t{row.number}", (row.latency_ms, row.proxy), textcoords="offset points", xytext=(5, 5),
                      fontsize=8)
    axes.axvline(attrs["budget_ms"], color="gray", linestyle="--", label=f"budget {attrs['budget_ms']:g} ms")
    axes.set_xlabel(f"predicted latency on {attrs['target']} (ms)")
    axes.set_ylabel(f"proxy: {attrs['proxy']}")
    axes.set_title(f"{attrs['study']}: {len(rows)} trials, {over} over budget (not evaluated)", fontsize=10)
    axes.legend(fontsize=8, loc="lower right")
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)


def export_record(row: TrialRecord, role: str, attrs: dict, export_root: Path, pareto_png: Path,
                  onnx: bool = True) -> Exported:
    """Write one architecture's folder under `export_root` (atomically; with ``model.onnx`` if `onnx`); returns
    where it went."""
    name = model_name(attrs["study"], row.number)
    final = export_root / name
    export_root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".staging-{name}-", dir=export_root))
    try:
        spec = row.spec
        params, flops = count_params(spec), count_flops(spec, resolution=attrs.get("resolution", 224))
        measured = _measured_here(spec, attrs)
        onnx_result, onnx_ms = _write_onnx(spec, attrs, staging, measure=measured is not None) if onnx else \
            (None, None)
        (staging / "arch.json").write_text(spec.to_json() + "\n")
        (staging / f"{name}.py").write_text(_module_source(name, row, attrs))
        (staging / "MODEL_CARD.md").write_text(_model_card(name, row, role, attrs, params, flops, measured,
                                                           onnx_result, onnx_ms))
        shutil.copyfile(pareto_png, staging / "pareto.png")
        write_json_atomic(staging / "export.json", {
            "name": name, "role": role, "trial": row.number, "study": attrs["study"], "target": attrs["target"],
            "budget_ms": attrs["budget_ms"], "latency_ms": row.latency_ms, "latency_source": row.latency_source,
            "breakdown_ms": row.breakdown_ms, "measured": measured, "params": params, "flops": flops,
            "proxy": {attrs["proxy"]: row.proxy},
            "onnx": None if onnx_result is None else {**onnx_result.to_dict(), "onnxruntime_ms": onnx_ms}})
        staging.chmod(0o755)
        replace_dir_atomic(staging, final)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return Exported(name=name, path=final, trial=row.number, role=role)


def _write_onnx(spec: ArchSpec, attrs: dict, folder: Path, measure: bool) -> tuple[OnnxResult, float | None]:
    """``folder/model.onnx`` of `spec` as deployed, checked; with its onnxruntime latency (ms) if `measure`."""
    resolution = attrs.get("resolution", 224)
    result = export_onnx(fold_batchnorm(build_model(spec)), resolution, folder / "model.onnx")
    if result.error is not None:
        _log.warning("model.onnx of %s: %s", spec.digest(), result.error)
        return result, None
    return result, onnxruntime_ms(result.path, attrs.get("batch") or 1, resolution) if measure else None


def export_study(study: optuna.Study, out: Path, top_k: int, storage_url: str | None = None,
                 onnx: bool = True) -> list[Path]:
    """Export the best feasible trial and up to `top_k` Pareto trials of `study` under ``out/exports/<study>``
    (each with ``model.onnx`` if `onnx`).

    Returns the folders written (empty if no trial is feasible).
    """
    rows = records(study)
    chosen = choose(rows, top_k)
    if not chosen:
        return []
    attrs = {**study.user_attrs, "study": study.study_name, "storage": storage_url}
    export_root = Path(out) / "exports" / study.study_name
    try:
        ensure_folder(export_root)
    except OSError as error:
        raise ExportError(f"cannot write exports under {out}: {error.strerror or error}") from None
    pareto_png = export_root / f".pareto-{uuid.uuid4().hex}.png"
    try:
        plot_pareto(rows, attrs, chosen, pareto_png)
        exported = [export_record(row, role, attrs, export_root, pareto_png, onnx) for row, role in chosen]
    finally:
        pareto_png.unlink(missing_ok=True)
    set_aside_superseded(export_root, {e.name for e in exported}, study.study_name)
    return [e.path for e in exported]


def set_aside_superseded(export_root: Path, current: set[str], study: str) -> list[Path]:
    """Move the exports of an earlier export set (the study grew, its winners changed) from `export_root` to
    ``export_root/superseded/``, each whole, so the folder holds the current set only and nothing is deleted;
    returns their new paths. Only folders this module wrote (an export's name and ``arch.json``) move."""
    prefix = model_name(study, 0)[:-len("0000")]
    moved = []
    for folder in sorted(export_root.iterdir()):
        if folder.name in current or not folder.name.startswith(prefix) or not (folder / "arch.json").is_file():
            continue
        superseded = export_root / SUPERSEDED
        ensure_folder(superseded)
        replace_dir_atomic(folder, superseded / folder.name)  # an older copy of the same trial is replaced
        moved.append(superseded / folder.name)
    if moved:
        _log.info("moved %d exports of an earlier export set to %s", len(moved), export_root / SUPERSEDED)
    return moved

