"""Benchmark of the attention-mixer ops: Triton kernel vs PyTorch eager vs torch.compile vs SDPA, forward only.

Shapes are those of the reference architectures (`search_spaces.reference.REFERENCE_ARCHS`) at a 224x224 input,
one case per attention stage, plus two SHViT stress cases; batches 1 and 64 by default.

Run from the repository root (a CUDA GPU is needed; see ``--help``)::

    python benchmarks/kernels.py                          # all ops -> benchmarks/results/kernels-<device>.json
    python benchmarks/kernels.py --ops window_attention --merge   # one op, merged into the existing file
    python benchmarks/kernels.py --smoke --out /tmp/k.json        # CPU, Triton interpreter, tiny shapes

Implementations timed per case (all under ``torch.inference_mode()``, inputs in ``--dtype``):

- ``triton``: the public op with ``backend="triton"``.
- ``eager``: the public op with ``backend="torch"`` (the plain-PyTorch reference; it computes in fp32).
- ``compile``: ``torch.compile`` of that reference (``--compile-mode``, ``dynamic=False``, dynamo reset per case).
- ``sdpa``: ``torch.nn.functional.scaled_dot_product_attention`` with the layout work it needs (window partition
  with pad/roll, stripe partition, ``.contiguous()`` of SHViT's transposed views) and its reverse, all timed; the
  window bias + shift mask is built once per case (an inference constant), not timed. None for linear attention.
- ``sdpa_core``: the same SDPA calls alone, on inputs laid out beforehand (a lower bound for any SDPA-based path).

Before timing, every output except ``sdpa_core`` (same SDPA calls as ``sdpa``) is checked against the reference
run in fp32 on the same (rounded) inputs; a check beyond the dtype's tolerance, or an implementation that raises,
makes the exit code 1 after the results are written. Exit code 2: no GPU, bad arguments, or a --merge into a
file written with other settings.

The results file is rewritten (atomically) after every case, so a run that is cut off keeps what it measured.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
import os
import platform
import re
import sys
import tempfile
import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, ClassVar

ROOT = Path(__file__).resolve().parents[1]
# Run as a script, sys.path[0] is benchmarks/, where this file would shadow the `kernels` package.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if not (p and Path(p).resolve() == _HERE)]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

# Neither torch nor `kernels` imports triton, so main can still set TRITON_INTERPRET for --smoke: Triton decorates
# its own library functions when it is first imported, so the interpreter works only if set before that. Hence
# `search_spaces` (which imports torch._dynamo, which imports triton) and triton itself are imported late.
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from common.dtypes import DTYPES, torch_dtype  # noqa: E402
import kernels  # noqa: E402  (the public ops; their Triton modules are imported on the first Triton call)
from benchmarks._io import write_json_atomic  # noqa: E402

__all__ = ["main"]

_log = logging.getLogger("benchmarks.kernels")

OPS = ("window_attention", "linear_attention", "single_head_attention", "strip_attention")
IMPLS = ("triton", "eager", "compile", "sdpa", "sdpa_core")
# Per-element check |got - want| <= atol * rms(want) + rtol * |want| against the fp32 reference on the same rounded
# inputs. atol is relative to the output's RMS: linear attention's outputs are ~0.01, so an absolute 2e-2 would pass
# an all-zero output.
TOLERANCES = {"bf16": (2e-2, 2e-2), "fp16": (4e-3, 4e-3), "fp32": (2e-4, 2e-4)}
QUANTILES = (0.5, 0.2, 0.8)  # median, p20, p80 of one set of reps
RESOLUTION = 224
NO_GPU_MESSAGE = "benchmarks/kernels.py needs a CUDA GPU; none found"
SCHEMA_VERSION = 1

# Peak HBM bandwidth (B/s) and dense bf16/fp16 tensor-core FLOP/s (no sparsity), from NVIDIA's datasheets. Matched
# in order against torch.cuda.get_device_name() (e.g. "NVIDIA H100 80GB HBM3" is the SXM5 part).
PEAKS: tuple[tuple[str, str, float, float], ...] = (
    (r"H200.*NVL", "H200 NVL", 4.8e12, 835e12),
    (r"H200", "H200 SXM", 4.8e12, 989e12),
    (r"H100.*NVL", "H100 NVL", 3.9e12, 835e12),
    (r"H100.*PCIe", "H100 PCIe", 2.0e12, 756e12),
    (r"H100.*(SXM|HBM3)", "H100 SXM", 3.35e12, 989e12),
    (r"A100.*SXM.*80GB", "A100 SXM 80GB", 2.039e12, 312e12),
    (r"A100.*80GB", "A100 PCIe 80GB", 1.935e12, 312e12),
    (r"A100", "A100 40GB", 1.555e12, 312e12),
)


class BenchmarkError(RuntimeError):
    """The environment cannot run the benchmark as asked (the CLI prints the message and exits 2)."""


# ------------------------------------------------------------------------------------------------- workloads
@dataclass
class Workload:
    """One case at one batch, with inputs allocated: what each implementation calls, and the work it does."""
    op: Callable[..., torch.Tensor]                    # public op of `kernels`; takes `args` then `backend=`
    args: tuple[Any, ...]
    sdpa: Callable[[], torch.Tensor] | None            # layout work + SDPA + reverse, output like the op's
    sdpa_core: Callable[[], Any] | None                # the SDPA calls alone, on pre-laid-out inputs
    bytes_moved: int                                   # read q, k, v + write out, at the input dtype
    flops: int                                         # 2 * MACs of the attention products


def _randn(shape: tuple[int, ...], gen: torch.Generator, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    return torch.randn(shape, generator=gen, device=device, dtype=torch.float32).to(dtype)


def _masked_value(dtype: torch.dtype) -> float:
    """Additive mask value: finite (fully masked pad rows stay finite, as in the reference), exp() of it is 0."""
    return max(-1e9, torch.finfo(dtype).min / 2)


def _aligned(mask: torch.Tensor) -> torch.Tensor:
    """`mask` stored with its last dim padded to a multiple of 16 elements, so SDPA's fused kernels take it as is."""
    last = mask.shape[-1]
    buffer = mask.new_zeros(*mask.shape[:-1], -(-last // 16) * 16)
    buffer[..., :last] = mask
    return buffer[..., :last]


@dataclass(frozen=True)
class WindowCase:
    """Swin window attention on an ``H x W`` map: ``heads`` heads of ``head_dim``, M x M windows, cyclic shift."""
    op_name: ClassVar[str] = "window_attention"
    tag: str
    height: int
    width: int
    heads: int
    head_dim: int
    window_size: int
    shift_size: int

    @property
    def shape_id(self) -> str:
        return (f"{self.tag}-{self.height}x{self.width}-C{self.heads * self.head_dim}-h{self.heads}"
                f"-M{self.window_size}-shift{self.shift_size}")

    def build(self, batch: int, device: torch.device, dtype: torch.dtype, gen: torch.Generator) -> Workload:
        b, h, w, heads, d, m, s = (batch, self.height, self.width, self.heads, self.head_dim, self.window_size,
                                   self.shift_size)
        hp, wp = -(-h // m) * m, -(-w // m) * m
        n_windows, tokens = (hp // m) * (wp // m), m * m
        # Views of one [B, H, W, 3, heads, D] projection, as a Swin block makes them.
        q, k, v = _randn((b, h, w, 3, heads, d), gen, device, dtype).unbind(3)
        table = _randn((heads, 2 * m - 1, 2 * m - 1), gen, device, dtype)
        scale = d ** -0.5

        masked = _window_key_mask(h, w, m, s, device)  # [nW, M*M, M*M]
        bias = kernels.relative_bias(table.float(), m)  # [heads, M*M, M*M]
        attn_mask = bias[None] + masked[:, None].float() * _masked_value(dtype)
        attn_mask = _aligned(attn_mask.reshape(1, n_windows * heads, tokens, tokens).to(dtype))

        def partition(t: torch.Tensor) -> torch.Tensor:  # [B, H, W, heads, D] -> [B, nW*heads, M*M, D]
            t = F.pad(t, (0, 0, 0, 0, 0, wp - w, 0, hp - h))
            if s:
                t = torch.roll(t, shifts=(-s, -s), dims=(1, 2))
            return t.view(b, hp // m, m, wp // m, m, heads, d).permute(0, 1, 3, 5, 2, 4, 6).reshape(
                b, n_windows * heads, tokens, d)

        def sdpa() -> torch.Tensor:
            out = F.scaled_dot_product_attention(partition(q), partition(k), partition(v), attn_mask=attn_mask,
                                                 scale=scale)
            out = out.view(b, hp // m, wp // m, heads, m, m, d).permute(0, 1, 4, 2, 5, 3, 6).reshape(
                b, hp, wp, heads, d)
            if s:
                out = torch.roll(out, shifts=(s, s), dims=(1, 2))
            return out[:, :h, :w].contiguous()

        qw, kw, vw = partition(q), partition(k), partition(v)

        def sdpa_core() -> torch.Tensor:
            return F.scaled_dot_product_attention(qw, kw, vw, attn_mask=attn_mask, scale=scale)

        return Workload(
            op=kernels.window_attention, args=(q, k, v, table, m, s, scale), sdpa=sdpa, sdpa_core=sdpa_core,
            bytes_moved=4 * b * h * w * heads * d * q.element_size(),
            flops=2 * 2 * b * n_windows * heads * tokens * tokens * d)


def _window_key_mask(height: int, width: int, m: int, s: int, device: torch.device) -> torch.Tensor:
    """``[nW, M*M (query), M*M (key)]``, True where the reference masks: pad keys, and keys of another Swin region."""
    hp, wp = -(-height // m) * m, -(-width // m) * m
    rows, cols = torch.arange(hp, device=device), torch.arange(wp, device=device)
    is_pad = ((rows + s) % hp >= height)[:, None] | ((cols + s) % wp >= width)[None, :]  # on the rolled grid

    def region(index: torch.Tensor, padded: int) -> torch.Tensor:
        return (index >= padded - m).long() + (index >= padded - s).long()

    regions = region(rows, hp)[:, None] * 3 + region(cols, wp)[None, :] if s else torch.zeros(
        hp, wp, dtype=torch.long, device=device)

    def per_window(t: torch.Tensor) -> torch.Tensor:  # [Hp, Wp] -> [nW, M*M]
        return t.view(hp // m, m, wp // m, m).permute(0, 2, 1, 3).reshape(-1, m * m)

    pad_w, region_w = per_window(is_pad), per_window(regions)
    return pad_w[:, None, :] | (region_w[:, :, None] != region_w[:, None, :])


@dataclass(frozen=True)
class LinearCase:
    """L2ViT linear attention over N tokens (temperature D ** -0.5, floor 100). No SDPA equivalent."""
    op_name: ClassVar[str] = "linear_attention"
    tag: str
    height: int
    width: int
    heads: int
    head_dim: int

    @property
    def shape_id(self) -> str:
        return (f"{self.tag}-N{self.height * self.width}-C{self.heads * self.head_dim}-h{self.heads}")

    def build(self, batch: int, device: torch.device, dtype: torch.dtype, gen: torch.Generator) -> Workload:
        b, n, heads, d = batch, self.height * self.width, self.heads, self.head_dim
        q, k, v = _randn((b, n, 3, heads, d), gen, device, dtype).unbind(2)
        temperature = torch.full((heads,), d ** -0.5, device=device, dtype=dtype)
        return Workload(
            op=kernels.linear_attention, args=(q, k, v, temperature, 100.0), sdpa=None, sdpa_core=None,
            bytes_moved=4 * b * n * heads * d * q.element_size(),
            # phi(K)^T V and phi(Q) S (N*D*D MACs each), and the normaliser phi(Q) . z (N*D).
            flops=2 * b * heads * (2 * n * d * d + n * d))


@dataclass(frozen=True)
class SingleHeadCase:
    """SHViT single-head attention over N tokens: q, k of ``qk_dim``, v of ``v_dim`` (the partial dim)."""
    op_name: ClassVar[str] = "single_head_attention"
    tag: str
    height: int
    width: int
    qk_dim: int
    v_dim: int

    @property
    def shape_id(self) -> str:
        return f"{self.tag}-{self.height}x{self.width}-qk{self.qk_dim}-v{self.v_dim}"

    def build(self, batch: int, device: torch.device, dtype: torch.dtype, gen: torch.Generator) -> Workload:
        b, n, dqk, dv = batch, self.height * self.width, self.qk_dim, self.v_dim
        # Transposed views of one [B, 2*Dqk + Dv, N] 1x1-conv output (token stride 1), as SHViT makes them.
        qkv = _randn((b, 2 * dqk + dv, n), gen, device, dtype)
        q, k, v = (t.transpose(1, 2) for t in qkv.split((dqk, dqk, dv), dim=1))
        scale = dqk ** -0.5

        def sdpa() -> torch.Tensor:
            return F.scaled_dot_product_attention(q.unsqueeze(1).contiguous(), k.unsqueeze(1).contiguous(),
                                                  v.unsqueeze(1).contiguous(), scale=scale).squeeze(1)

        qc, kc, vc = (t.unsqueeze(1).contiguous() for t in (q, k, v))

        def sdpa_core() -> torch.Tensor:
            return F.scaled_dot_product_attention(qc, kc, vc, scale=scale)

        return Workload(
            op=kernels.single_head_attention, args=(q, k, v, scale), sdpa=sdpa, sdpa_core=sdpa_core,
            bytes_moved=2 * b * n * (dqk + dv) * q.element_size(),
            flops=2 * b * n * n * (dqk + dv))


@dataclass(frozen=True)
class StripCase:
    """CSWin stripe attention: heads/2 in vertical stripes, heads/2 in horizontal ones, ``stripe_width`` wide."""
    op_name: ClassVar[str] = "strip_attention"
    tag: str
    height: int
    width: int
    heads: int
    head_dim: int
    stripe_width: int

    @property
    def shape_id(self) -> str:
        return (f"{self.tag}-{self.height}x{self.width}-C{self.heads * self.head_dim}-h{self.heads}"
                f"-sw{self.stripe_width}")

    def build(self, batch: int, device: torch.device, dtype: torch.dtype, gen: torch.Generator) -> Workload:
        b, h, w, heads, d, sw = batch, self.height, self.width, self.heads, self.head_dim, self.stripe_width
        half = heads // 2
        q, k, v = _randn((b, h, w, 3, heads, d), gen, device, dtype).unbind(3)
        scale = d ** -0.5
        # Horizontal stripes are vertical stripes of the transposed map; masks only where the last stripe is narrow.
        mask_v = _stripe_pad_mask(h, w, sw, half, dtype, device)
        mask_h = _stripe_pad_mask(w, h, sw, half, dtype, device)

        def halves(t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            return t[:, :, :, :half], t[:, :, :, half:].transpose(1, 2)

        def sdpa() -> torch.Tensor:
            (qv, qh), (kv, kh), (vv, vh) = halves(q), halves(k), halves(v)
            out_v = F.scaled_dot_product_attention(_stripes(qv, sw), _stripes(kv, sw), _stripes(vv, sw),
                                                   attn_mask=mask_v, scale=scale)
            out_h = F.scaled_dot_product_attention(_stripes(qh, sw), _stripes(kh, sw), _stripes(vh, sw),
                                                   attn_mask=mask_h, scale=scale)
            vertical = _unstripes(out_v, h, w, sw)
            horizontal = _unstripes(out_h, w, h, sw).transpose(1, 2)
            return torch.cat([vertical, horizontal], dim=3)

        parts = [halves(t) for t in (q, k, v)]
        vertical_in = [_stripes(p[0], sw) for p in parts]
        horizontal_in = [_stripes(p[1], sw) for p in parts]

        def sdpa_core() -> tuple[torch.Tensor, torch.Tensor]:
            return (F.scaled_dot_product_attention(*vertical_in, attn_mask=mask_v, scale=scale),
                    F.scaled_dot_product_attention(*horizontal_in, attn_mask=mask_h, scale=scale))

        return Workload(
            op=kernels.strip_attention, args=(q, k, v, sw, scale), sdpa=sdpa, sdpa_core=sdpa_core,
            bytes_moved=4 * b * h * w * heads * d * q.element_size(),
            flops=2 * 2 * b * half * d * (_stripe_pairs(h, w, sw) + _stripe_pairs(w, h, sw)))


def _stripe_pairs(rows: int, cols: int, sw: int) -> int:
    """Query-key pairs of vertical stripes (all rows x sw cols) over a rows x cols map, the last one narrower."""
    sw = min(sw, cols)
    return sum((rows * min(sw, cols - start)) ** 2 for start in range(0, cols, sw))


def _stripes(t: torch.Tensor, sw: int) -> torch.Tensor:
    """``[B, R, C, h, D]`` -> ``[B, nS*h, R*sw, D]``: vertical stripes of sw columns (C padded to a multiple)."""
    b, rows, cols, heads, d = t.shape
    sw = min(sw, cols)
    padded = -(-cols // sw) * sw
    t = F.pad(t, (0, 0, 0, 0, 0, padded - cols)).view(b, rows, padded // sw, sw, heads, d)
    return t.permute(0, 2, 4, 1, 3, 5).reshape(b, -1, rows * sw, d)


def _unstripes(out: torch.Tensor, rows: int, cols: int, sw: int) -> torch.Tensor:
    """Inverse of `_stripes`: ``[B, nS*h, R*sw, D]`` -> ``[B, R, C, h, D]``."""
    sw = min(sw, cols)
    padded = -(-cols // sw) * sw
    b, _, _, d = out.shape
    out = out.view(b, padded // sw, -1, rows, sw, d).permute(0, 3, 1, 4, 2, 5)
    return out.reshape(b, rows, padded, -1, d)[:, :, :cols]


def _stripe_pad_mask(rows: int, cols: int, sw: int, heads: int, dtype: torch.dtype,
                     device: torch.device) -> torch.Tensor | None:
    """Additive ``[1, nS*heads, 1, R*sw]`` mask of the pad keys of the last stripe; None when sw divides cols."""
    sw = min(sw, cols)
    padded = -(-cols // sw) * sw
    if padded == cols:
        return None
    is_pad = (torch.arange(padded, device=device) >= cols).view(padded // sw, 1, sw).expand(-1, rows, sw)
    mask = is_pad.reshape(padded // sw, 1, 1, rows * sw).expand(-1, heads, 1, -1).float() * _masked_value(dtype)
    return _aligned(mask.reshape(1, -1, 1, rows * sw).to(dtype))


Case = WindowCase | LinearCase | SingleHeadCase | StripCase


def reference_cases(resolution: int = RESOLUTION) -> list[Case]:
    """One case per attention stage of every reference architecture at ``resolution`` (heads, widths, windows and
    map sizes read from `REFERENCE_ARCHS`), plus SHViT stress cases (larger maps than SHViT-S1 has)."""
    from search_spaces.reference import REFERENCE_ARCHS
    from search_spaces.spec import LinearMixer, SingleHeadMixer, StripMixer, WindowMixer

    cases: list[Case] = []
    for arch_name, arch in REFERENCE_ARCHS.items():
        for index, (stage, (h, w)) in enumerate(zip(arch.stages, arch.stage_resolutions(resolution, resolution))):
            mixer, tag = stage.mixer, f"{arch_name}.s{index}"
            if isinstance(mixer, WindowMixer):
                m = mixer.window_size
                shift = m // 2 if mixer.shift and min(h, w) > m else 0  # Swin: no shift once a window covers the map
                cases.append(WindowCase(tag, h, w, mixer.num_heads, stage.width // mixer.num_heads, m, shift))
            elif isinstance(mixer, LinearMixer):
                cases.append(LinearCase(tag, h, w, mixer.num_heads, stage.width // mixer.num_heads))
            elif isinstance(mixer, SingleHeadMixer):
                cases.append(SingleHeadCase(tag, h, w, mixer.qk_dim, mixer.partial_dim))
            elif isinstance(mixer, StripMixer):
                cases.append(StripCase(tag, h, w, mixer.num_heads, stage.width // mixer.num_heads,
                                       mixer.stripe_width))
    cases += [SingleHeadCase("stress", 14, 14, 16, 48), SingleHeadCase("stress", 28, 28, 16, 32)]
    return sorted(cases, key=lambda c: OPS.index(c.op_name))


def smoke_cases() -> list[Case]:
    """Tiny cases for ``--smoke`` (Triton interpreter): every code path, including padding and narrow stripes."""
    return [
        WindowCase("smoke", 14, 14, 2, 16, 7, 3),
        WindowCase("smoke", 9, 11, 2, 16, 4, 2),    # padded map, shift
        WindowCase("smoke", 7, 7, 2, 16, 7, 0),
        LinearCase("smoke", 7, 7, 2, 16),
        LinearCase("smoke", 7, 9, 3, 24),
        SingleHeadCase("smoke", 7, 7, 16, 24),
        SingleHeadCase("smoke", 7, 9, 16, 20),
        StripCase("smoke", 8, 8, 2, 16, 2),
        StripCase("smoke", 9, 9, 4, 16, 2),         # last stripe narrower: masked pad keys
        StripCase("smoke", 7, 7, 4, 16, 7),         # stripe covers the map: full attention
    ]


# ------------------------------------------------------------------------------------------------------ timing
def _summary(times_ms: list[float]) -> dict[str, float]:
    """Median, p20, p80 with linear interpolation (as `triton.testing`)."""
    ordered = sorted(times_ms)

    def quantile(p: float) -> float:
        point = p * (len(ordered) - 1)
        low, high = math.floor(point), math.ceil(point)
        return ordered[low] + (point - low) * (ordered[high] - ordered[low])

    median, p20, p80 = (quantile(p) for p in QUANTILES)
    return {"median_ms": median, "p20_ms": p20, "p80_ms": p80}


def _time_cuda(fn: Callable[[], Any], warmup_ms: int, rep_ms: int) -> dict[str, float]:
    from triton.testing import do_bench  # imported late: TRITON_INTERPRET must be settled first
    # With quantiles given, triton 3.7's do_bench returns those quantiles of one set of reps (return_mode is then
    # unused); QUANTILES[0] = 0.5 is the median.
    result = do_bench(fn, warmup=warmup_ms, rep=rep_ms, quantiles=list(QUANTILES), return_mode="median")
    median, p20, p80 = (float(x) for x in result)
    return {"median_ms": median, "p20_ms": p20, "p80_ms": p80}


def _time_cpu(fn: Callable[[], Any], reps: int) -> dict[str, float]:
    fn()
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e3)
    return _summary(times)


def _cuda_kernel_names(fn: Callable[[], Any]) -> list[str] | None:
    """Names of the CUDA kernels one call launches (shows which SDPA backend ran); None if the profiler fails."""
    try:
        from torch.autograd import DeviceType
        from torch.profiler import ProfilerActivity, profile
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            fn()
            torch.cuda.synchronize()
        names = {event.name for event in prof.events() if event.device_type == DeviceType.CUDA}
        return sorted(name[:120] for name in names)[:12]
    except Exception as exc:  # informational only
        _log.debug("profiler failed: %s", exc)
        return None


# ---------------------------------------------------------------------------------------------------- one case
@dataclass(frozen=True)
class Settings:
    smoke: bool
    dtype_name: str
    device: torch.device
    compile: bool
    compile_mode: str
    warmup_ms: int
    rep_ms: int
    cpu_reps: int
    atol: float
    rtol: float
    peak_bw: float | None
    peak_flops: float | None


def _to_fp32(args: tuple[Any, ...]) -> tuple[Any, ...]:
    return tuple(a.float() if isinstance(a, torch.Tensor) else a for a in args)


def _error_text(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"[:300]


def run_case(case: Case, batch: int, settings: Settings, seed: int) -> dict[str, Any]:
    """Check and time every implementation of one case at one batch; returns the result row."""
    gen = torch.Generator(device=settings.device).manual_seed(seed)
    dtype = torch_dtype(settings.dtype_name)
    workload = case.build(batch, settings.device, dtype, gen)
    op, args = workload.op, workload.args

    def reference(*call_args: Any) -> torch.Tensor:
        return op(*call_args, backend="torch")

    fns: dict[str, Callable[[], Any]] = {
        "triton": lambda: op(*args, backend="triton"),
        "eager": lambda: op(*args, backend="torch"),
    }
    if settings.compile:
        torch._dynamo.reset()  # fresh caches: static shapes per case, no recompile limit across cases
        compiled = torch.compile(reference, mode=settings.compile_mode, dynamic=False)
        fns["compile"] = lambda: compiled(*args)
    if workload.sdpa is not None:
        fns["sdpa"] = workload.sdpa
        fns["sdpa_core"] = workload.sdpa_core

    impls: dict[str, dict[str, Any]] = {name: {} for name in fns}
    failures: list[str] = []
    want = reference(*_to_fp32(args))
    ref_rms = float(want.square().mean().sqrt())
    bound = settings.atol * ref_rms + settings.rtol * want.abs()
    for name, fn in fns.items():
        entry = impls[name]
        try:
            start = time.perf_counter()
            got = fn()
            if settings.device.type == "cuda":
                torch.cuda.synchronize()
            entry["first_call_s"] = round(time.perf_counter() - start, 3)
        except Exception as exc:
            entry["error"] = _error_text(exc)
            failures.append(f"{name} raised {entry['error']}")
            continue
        if name == "sdpa_core":
            continue  # same SDPA calls as `sdpa`, which is checked
        if tuple(got.shape) != tuple(want.shape):
            entry["error"] = f"output shape {tuple(got.shape)}, reference {tuple(want.shape)}"
            failures.append(f"{name}: {entry['error']}")
            continue
        diff = (got.float() - want).abs()
        max_abs_err = float(diff.max())
        if not math.isfinite(max_abs_err):  # inf/nan in the output (JSON has no nan: stored as null)
            entry.update(max_abs_err=None, ok=False)
            failures.append(f"{name}: non-finite output")
            del got, diff
            continue
        entry["max_abs_err"] = max_abs_err
        entry["ok"] = bool((diff <= bound).all())
        if not entry["ok"]:
            failures.append(f"{name}: max abs error {entry['max_abs_err']:.3g} beyond {settings.atol} * "
                            f"rms(reference) ({ref_rms:.3g}) + {settings.rtol} * |reference|")
        del got, diff
    del want, bound

    for name, fn in fns.items():
        entry = impls[name]
        if "error" in entry or entry.get("ok") is False:
            continue  # timing a wrong or broken implementation means nothing
        try:
            if settings.device.type == "cuda":
                entry.update(_time_cuda(fn, settings.warmup_ms, settings.rep_ms))
                if name.startswith("sdpa"):
                    entry["cuda_kernels"] = _cuda_kernel_names(fn)
            else:
                entry.update(_time_cpu(fn, settings.cpu_reps))
        except Exception as exc:
            entry["error"] = _error_text(exc)
            failures.append(f"{name} raised {entry['error']} while timed")
            continue
        seconds = entry["median_ms"] * 1e-3
        entry["pct_peak_bw"] = _percent(workload.bytes_moved / seconds, settings.peak_bw)
        entry["pct_peak_flops"] = _percent(workload.flops / seconds, settings.peak_flops)

    def median(name: str) -> float | None:
        return impls.get(name, {}).get("median_ms")

    def speedup(name: str) -> float | None:
        base, ours = median(name), median("triton")
        return base / ours if base is not None and ours is not None else None

    return {
        "op": case.op_name, "shape_id": case.shape_id, "batch": batch,
        "shape": {k: v for k, v in dataclasses.asdict(case).items() if k != "tag"},
        "bytes_moved": workload.bytes_moved, "flops": workload.flops,
        "impls": impls,
        "speedup_vs_eager": speedup("eager"), "speedup_vs_compile": speedup("compile"),
        "speedup_vs_sdpa": speedup("sdpa"),
        "pct_peak_bw": impls["triton"].get("pct_peak_bw"), "pct_peak_flops": impls["triton"].get("pct_peak_flops"),
        "max_abs_err": impls["triton"].get("max_abs_err"), "reference_rms": ref_rms,
        "ok": not failures, "failures": failures,
    }


def _percent(rate: float, peak: float | None) -> float | None:
    return 100.0 * rate / peak if peak else None


# ---------------------------------------------------------------------------------------------- device, output
def device_slug(name: str) -> str:
    """``"NVIDIA H100 80GB HBM3"`` -> ``"nvidia-h100-80gb-hbm3"``."""
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def device_peaks(name: str) -> tuple[float | None, float | None, str]:
    """(peak bytes/s, peak dense bf16 FLOP/s, note) for a CUDA device name; None, None for unknown devices."""
    if "MIG" in name:
        return None, None, f"{name!r} is a MIG slice: full-GPU peaks do not apply, percentages left out"
    for pattern, label, bandwidth, flops in PEAKS:
        if re.search(pattern, name, flags=re.IGNORECASE):
            return bandwidth, flops, f"peaks of {label} (NVIDIA datasheet; FLOP/s dense bf16, no sparsity)"
    return None, None, f"no peaks known for {name!r}: add it to PEAKS in benchmarks/kernels.py; percentages left out"


def _device_info(device: torch.device) -> dict[str, Any]:
    if device.type != "cuda":
        return {"name": f"cpu ({platform.processor() or platform.machine()}), Triton interpreter", "type": "cpu",
                "threads": torch.get_num_threads()}
    props = torch.cuda.get_device_properties(device)
    return {"name": props.name, "type": "cuda", "capability": f"{props.major}.{props.minor}",
            "sm_count": props.multi_processor_count, "memory_gib": round(props.total_memory / 2 ** 30, 1)}


def _versions() -> dict[str, Any]:
    import triton
    return {"python": platform.python_version(), "torch": torch.__version__, "triton": triton.__version__,
            "cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version() if torch.cuda.is_available() else None}


def _row_key(row: dict[str, Any]) -> tuple[str, str, int]:
    return row["op"], row["shape_id"], row["batch"]


def _merge_base(path: Path, header: dict[str, Any]) -> list[dict[str, Any]]:
    """Rows of an earlier run at `path` to keep; refuses when device, dtype or timing settings differ."""
    if not path.exists():
        return []
    try:
        old = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise BenchmarkError(f"--merge: cannot read {path}: {exc}") from exc
    for key in ("device", "dtype", "settings"):
        mine, theirs = header[key], old.get(key)
        if key == "device":
            mine, theirs = mine.get("name"), (theirs or {}).get("name")
        if isinstance(mine, dict) and isinstance(theirs, dict):
            differ = sorted(k for k in mine.keys() | theirs.keys() if mine.get(k) != theirs.get(k))
            mine, theirs = ({k: d.get(k) for k in differ} for d in (mine, theirs))
        if mine != theirs:
            raise BenchmarkError(f"--merge: {path} has {key} {theirs!r}, this run {mine!r}; use another --out")
    return list(old.get("rows", []))


def _fmt(value: float | None, digits: int = 3) -> str:
    if value is None:
        return "-"
    return f"{value:.{digits}f}" if abs(value) < 1000 else f"{value:.0f}"


def format_table(rows: list[dict[str, Any]]) -> str:
    """Readable table: median ms of each implementation, Triton's speedups, % of peaks, max abs error."""
    impls = [name for name in IMPLS if any(name in row["impls"] for row in rows)]
    header = ["op", "shape", "B", *[f"{name} ms" for name in impls], "x eager", "x compile", "x sdpa",
              "%BW", "%FLOP", "max err"]
    lines = []
    for row in rows:
        cells = [row["op"].replace("_attention", ""), row["shape_id"], str(row["batch"])]
        for name in impls:
            entry = row["impls"].get(name)
            if entry is None:
                cells.append("n/a")
            elif "error" in entry:
                cells.append("ERROR")
            elif entry.get("ok") is False:
                cells.append("WRONG")
            else:
                cells.append(_fmt(entry.get("median_ms"), 4))
        cells += [_fmt(row["speedup_vs_eager"], 2), _fmt(row["speedup_vs_compile"], 2),
                  _fmt(row["speedup_vs_sdpa"], 2), _fmt(row["pct_peak_bw"], 1), _fmt(row["pct_peak_flops"], 1),
                  "-" if row["max_abs_err"] is None else f"{row['max_abs_err']:.2e}"]
        lines.append(cells)
    widths = [max(len(str(c)) for c in column) for column in zip(header, *lines)]
    render = [" | ".join(str(c).rjust(wd) if i > 1 else str(c).ljust(wd) for i, (c, wd) in
                         enumerate(zip(cells, widths))) for cells in (header, *lines)]
    return "\n".join([render[0], "-+-".join("-" * wd for wd in widths), *render[1:]])


# -------------------------------------------------------------------------------------------------------- CLI
def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="benchmarks/kernels.py", description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ops", nargs="+", choices=OPS, default=list(OPS), help="ops to run (default: all)")
    parser.add_argument("--batches", nargs="+", type=int, default=None,
                        help="batch sizes (default: 1 64; --smoke: 1 2)")
    parser.add_argument("--dtype", choices=tuple(DTYPES), default=None,
                        help="input dtype (default bf16; --smoke: fp32 always)")
    parser.add_argument("--no-compile", action="store_true", help="skip torch.compile of the reference")
    parser.add_argument("--compile-mode", choices=("default", "max-autotune-no-cudagraphs"), default="default",
                        help="torch.compile mode (default: 'default'; max-autotune takes minutes per case)")
    parser.add_argument("--out", type=Path, default=None,
                        help="results JSON (default benchmarks/results/kernels-<device>.json, '-<dtype>' added for "
                             "dtypes other than bf16; with --smoke a file in the temp folder)")
    parser.add_argument("--merge", action="store_true",
                        help="keep the rows of other cases already in --out (same device, dtype, settings)")
    parser.add_argument("--quick", action="store_true", help="fewer reps (warmup 10 ms, rep 30 ms)")
    parser.add_argument("--warmup-ms", type=int, default=None, help="do_bench warmup time (default 25, --quick 10)")
    parser.add_argument("--rep-ms", type=int, default=None, help="do_bench rep time (default 100, --quick 30)")
    parser.add_argument("--smoke", action="store_true",
                        help="CPU plumbing check: tiny shapes, fp32, Triton interpreter, perf_counter, no compile")
    parser.add_argument("--list", action="store_true", help="print the cases and exit")
    args = parser.parse_args(argv)
    if args.batches is not None and any(b < 1 for b in args.batches):
        parser.error(f"--batches must be >= 1, got {args.batches}")
    return args


def _triton_imported_without_interpreter() -> bool:
    """Whether triton is already imported with its library compiled, not interpreted (too late for --smoke)."""
    if "triton" not in sys.modules:
        return False
    import triton.language as tl
    from triton.runtime import JITFunction
    return isinstance(tl.standard.max, JITFunction)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; returns the exit code (0 ok, 1 a check failed or an implementation raised, 2 unusable)."""
    args = _parse_args(argv)
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(message)s")
    _log.setLevel(logging.INFO)
    if not (args.smoke or args.list or torch.cuda.is_available()):
        print(NO_GPU_MESSAGE, file=sys.stderr)
        return 2
    cases = [c for c in (smoke_cases() if args.smoke else reference_cases()) if c.op_name in args.ops]
    batches = args.batches or ([1, 2] if args.smoke else [1, 64])
    if args.list:
        for case in cases:
            print(f"{case.op_name:22s} {case.shape_id}")
        return 0
    try:
        return _run(args, cases, batches)
    except BenchmarkError as exc:
        print(exc, file=sys.stderr)
        return 2


def _header(settings: Settings, peak_note: str) -> dict[str, Any]:
    """Everything in the results file but the rows: device, versions, settings, peaks, definitions."""
    smoke = settings.smoke
    return {
        "schema": SCHEMA_VERSION,
        "device": _device_info(settings.device),
        "versions": _versions(),
        "dtype": settings.dtype_name,
        "settings": {
            "smoke": smoke,
            "timer": ("time.perf_counter, median/p20/p80 of reps after one warm call" if smoke else
                      "triton.testing.do_bench: CUDA events, L2 flushed before every rep, quantiles [0.5, 0.2, "
                      "0.8] of one set of reps"),
            "warmup_ms": None if smoke else settings.warmup_ms,
            "rep_ms": None if smoke else settings.rep_ms,
            "cpu_reps": settings.cpu_reps if smoke else None,
            "compile": {"enabled": settings.compile, "mode": settings.compile_mode if settings.compile else None,
                        "dynamic": False, "fullgraph": False, "dynamo_reset_per_case": True},
            "l2_flushed_between_reps": not smoke,
            "inference_mode": True,
            "tolerance": {"atol": settings.atol, "rtol": settings.rtol,
                          "check": "|out - ref| <= atol * rms(ref) + rtol * |ref| per element; ref = the reference "
                                   "in fp32 on the same rounded inputs"},
            "float32_matmul_precision": torch.get_float32_matmul_precision(),
            "resolution": None if smoke else RESOLUTION,
        },
        "peaks": {"bytes_per_s": settings.peak_bw, "bf16_dense_flops_per_s": settings.peak_flops,
                  "note": peak_note},
        "definitions": {
            "bytes_moved": "q, k, v read once and the output written once, at the input dtype (bias table, "
                           "temperature and masks left out)",
            "flops": "2 x MACs of the attention products: window and strip Q K^T and P V per window/stripe (window: "
                     "dense over the padded map; strip: real stripe sizes), single-head Q K^T and P V, linear "
                     "phi(K)^T V, phi(Q) S and phi(Q).z",
            "pct_peak_bw / pct_peak_flops": "bytes_moved or flops / median time, in % of the device's peaks; row "
                                            "level = Triton's",
            "speedup_vs_*": "median time of that implementation / Triton's median time",
            "first_call_s": "wall time of the first call (Triton JIT compile, torch.compile compile time included)",
            "eager": "the public op with backend='torch' (the plain-PyTorch reference, computed in fp32)",
            "compile": "torch.compile of that reference function",
            "sdpa": "scaled_dot_product_attention including the layout work it needs and its reverse (window: "
                    "pad, roll, partition into [B, nW*heads, M*M, D]; strip: two calls over stripe partitions; "
                    "single head: contiguous copies of the transposed views); the window bias + shift mask is "
                    "precomputed per case and not timed; no SDPA equivalent for linear attention",
            "sdpa_core": "the SDPA call(s) alone on pre-partitioned inputs (not checked separately: same calls as "
                         "sdpa)",
            "cuda_kernels": "sdpa and sdpa_core: CUDA kernels one call launches (torch.profiler), to see which "
                            "SDPA backend ran",
            "reference_rms": "RMS of the fp32 reference output (the scale of atol)",
            "inputs": "window/strip: unbind views of one [B, H, W, 3, heads, D] projection; linear: of one "
                      "[B, N, 3, heads, D]; single head: transposed views of one [B, 2*Dqk + Dv, N] conv output",
        },
    }


def _run(args: argparse.Namespace, cases: list[Case], batches: list[int]) -> int:
    if args.smoke:
        if _triton_imported_without_interpreter():
            raise BenchmarkError("--smoke needs the Triton interpreter, but triton was imported without it; run "
                                 "it in a fresh process, or set TRITON_INTERPRET=1 before triton is imported")
        os.environ["TRITON_INTERPRET"] = "1"  # before triton's first import (see the imports at the top)
        device, dtype_name, do_compile = torch.device("cpu"), "fp32", False
        if args.dtype not in (None, "fp32"):
            _log.info("--smoke runs fp32 (the interpreter's bf16 arithmetic is not exact); --dtype ignored")
        peak_bw, peak_flops, peak_note = None, None, "smoke run on CPU: no peaks"
        out = args.out or Path(tempfile.gettempdir()) / "kernels-smoke.json"
    else:
        if not torch.cuda.is_available():
            raise BenchmarkError(NO_GPU_MESSAGE)
        if os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"):
            raise BenchmarkError("TRITON_INTERPRET is set: the Triton kernels would run in the interpreter; unset it")
        device, dtype_name, do_compile = torch.device("cuda", torch.cuda.current_device()), args.dtype or "bf16", \
            not args.no_compile
        name = torch.cuda.get_device_name(device)
        peak_bw, peak_flops, peak_note = device_peaks(name)
        suffix = "" if dtype_name == "bf16" else f"-{dtype_name}"
        out = args.out or ROOT / "benchmarks" / "results" / f"kernels-{device_slug(name)}{suffix}.json"

    warmup_ms = args.warmup_ms if args.warmup_ms is not None else (10 if args.quick else 25)
    rep_ms = args.rep_ms if args.rep_ms is not None else (30 if args.quick else 100)
    atol, rtol = TOLERANCES[dtype_name]
    settings = Settings(smoke=args.smoke, dtype_name=dtype_name, device=device, compile=do_compile,
                        compile_mode=args.compile_mode, warmup_ms=warmup_ms, rep_ms=rep_ms,
                        cpu_reps=2 if args.quick else 3, atol=atol, rtol=rtol, peak_bw=peak_bw,
                        peak_flops=peak_flops)
    header = _header(settings, peak_note)
    kept = _merge_base(out, header) if args.merge else []
    planned = [(case, batch) for case in cases for batch in batches]
    rows: list[dict[str, Any]] = []
    started = time.perf_counter()

    def save(complete: bool) -> None:
        new_keys = {_row_key(r) for r in rows}
        merged = [r for r in kept if _row_key(r) not in new_keys] + rows
        merged.sort(key=lambda r: OPS.index(r["op"]) if r["op"] in OPS else len(OPS))
        failures = [f"{r['op']} {r['shape_id']} B={r['batch']}: {f}" for r in merged for f in r["failures"]]
        write_json_atomic(out, {**header, "complete": complete, "ok": not failures, "failures": failures,
                                "rows": merged})

    with torch.inference_mode():
        for index, (case, batch) in enumerate(planned):
            case_start = time.perf_counter()
            _log.info("[%d/%d] %s %s B=%d", index + 1, len(planned), case.op_name, case.shape_id, batch)
            row = run_case(case, batch, settings, seed=zlib.crc32(f"{case.shape_id}/{batch}".encode()))
            rows.append(row)
            save(complete=False)
            triton_ms = row["impls"]["triton"].get("median_ms")
            _log.info("    triton %s ms, x%s vs eager, x%s vs compile, max err %s (%.1f s)%s",
                      _fmt(triton_ms, 4), _fmt(row["speedup_vs_eager"], 2), _fmt(row["speedup_vs_compile"], 2),
                      "-" if row["max_abs_err"] is None else f"{row['max_abs_err']:.2e}",
                      time.perf_counter() - case_start, "" if row["ok"] else "  FAILED: " + "; ".join(row["failures"]))
            if device.type == "cuda":
                torch.cuda.empty_cache()
    save(complete=True)

    print()
    print(f"{header['device']['name']}, {dtype_name}, torch {torch.__version__}, triton "
          f"{header['versions']['triton']}; compile: {args.compile_mode if do_compile else 'off'}; "
          f"{peak_note}")
    print(format_table(rows))
    print(f"\nwrote {out} ({len(rows)} rows in {time.perf_counter() - started:.0f} s)")
    failures = [f"{r['op']} {r['shape_id']} B={r['batch']}: {f}" for r in rows for f in r["failures"]]
    if failures:
        print(f"\n{len(failures)} FAILURE(S):", file=sys.stderr)
        for line in failures:
            print(f"  {line}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
