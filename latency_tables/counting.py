"""What a forward runs on its target: the kernels, each with its class, FLOPs and bytes, counted on the meta device.

One forward runs on meta tensors (nothing is allocated or computed) under two modes: a `TorchDispatchMode` that
sees every aten op, and a `TorchFunctionMode` that catches ``F.scaled_dot_product_attention`` before PyTorch
decomposes it (on a GPU, and on a CPU, it is one fused kernel). The project's own attention kernels
(`kernels.observe_fused_kernels`) are counted as one kernel each when the table holds the Triton implementation,
and as the reference's ops when it holds ``torch``.

Counting rules (the same for the project's blocks and for timm models):
- Views and in-place view ops (``view``, ``_unsafe_view``, ``permute``, ``expand``...), allocations and scalar reads
  launch nothing and move nothing: not counted. A real copy (``clone``, ``_to_copy`` that casts, ``copy_``) is.
- An op's bytes are its distinct tensor inputs read once (an expanded tensor: its storage) and its outputs written
  once, at the dtypes the forward really runs at (the caller builds the module and input in the table's dtype, so
  a reference that upcasts to fp32 is counted at 4 bytes there).
- FLOPs are PyTorch's own formulas (`torch.utils.flop_counter`: 2 per multiply-add of matmuls, convolutions and
  attention); other ops count 0 FLOPs: their time is their bytes.
- Half-precision convolutions whose input is not channels-last run on cuDNN's NHWC tensor-core kernels with a
  layout transpose of the input before and of the output after (NVIDIA's performance guide; timm's own NCHW
  benchmarks run 1.2-1.7x slower than its channels-last ones on conv networks): two more eager kernels. The
  project's convolutions see channels-last views, so only image stems pay them; Inductor picks channels-last
  itself, so the compiled runtime never does.
- `trace(..., autocast=torch.float16)` counts a forward of an fp32 module under CUDA autocast (AMP), as timm's
  benchmarks run: matmuls and convolutions cast their fp32 inputs to half (weights once per forward), norms,
  softmax and the other ops of autocast's fp32 list cast half inputs to fp32, and the casts are kernels.
- ``eager`` runtime: every counted op is a kernel. ``compiled`` runtime (``torch.compile``'s Inductor): the compute
  ops (GEMM, convolution, attention) stay kernels of their own; every connected group of the other ops fuses into
  one kernel per reduction it holds (at least one), reading the tensors it takes from outside once and writing only
  the tensors used outside it.

Op classes (`OP_CLASSES`): ``gemm`` (mm/addmm/bmm...), ``conv`` (convolutions with more than one input channel per
group), ``dwconv`` (one input channel per group), ``attention`` (fused attention kernels), ``norm`` (ops that
reduce: norms, softmax, mean...), ``elementwise`` (the rest: pointwise, copies, pooling, padding, indexing).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves, tree_map
from torch.utils.flop_counter import flop_registry, sdpa_flop_count

import kernels

__all__ = ["OP_CLASSES", "COMPUTE_CLASSES", "RUNTIMES", "Kernel", "TracedOp", "trace", "kernels_of", "count_kernels"]

OP_CLASSES = ("gemm", "conv", "dwconv", "attention", "norm", "elementwise")
COMPUTE_CLASSES = ("gemm", "conv", "dwconv", "attention")  # kernels of their own in both runtimes
RUNTIMES = ("eager", "compiled")

_GEMM = frozenset({"mm", "addmm", "bmm", "baddbmm", "addbmm", "_scaled_mm", "mv", "addmv", "dot", "matmul"})
_CONV = frozenset({"convolution", "_convolution", "conv2d", "conv1d", "conv3d"})
_REDUCTIONS = frozenset({
    "native_layer_norm", "native_batch_norm", "_native_batch_norm_legit", "_native_batch_norm_legit_no_training",
    "native_group_norm", "_softmax", "_log_softmax", "softmax", "log_softmax", "mean", "sum", "var", "var_mean",
    "std", "std_mean", "amax", "amin", "max", "min", "linalg_vector_norm", "norm", "cumsum", "logsumexp", "argmax",
    "argmin", "topk", "sort", "prod", "any", "all", "_weight_norm_interface", "rms_norm", "_fused_rms_norm"})
_BATCH_NORMS = frozenset({"native_batch_norm", "_native_batch_norm_legit", "_native_batch_norm_legit_no_training",
                          "cudnn_batch_norm", "batch_norm"})
# CUDA autocast's policy, by the op names this counter sees (ATen/autocast_mode.h of torch 2.13:
# AT_FORALL_LOWER_PRECISION_FP, AT_FORALL_FP32, AT_FORALL_FP32_SET_OPT_DTYPE)
_AUTOCAST_HALF = frozenset({
    "_convolution", "conv1d", "conv2d", "conv3d", "conv_tbc", "conv_transpose1d", "conv_transpose2d",
    "conv_transpose3d", "convolution", "prelu", "addmm", "addmv", "addr", "matmul", "einsum", "mm", "mv",
    "linalg_vecdot", "linear", "addbmm", "baddbmm", "bmm", "chain_matmul", "linalg_multi_dot",
    "_scaled_dot_product_flash_attention", "scaled_dot_product_attention"})
_AUTOCAST_FLOAT = frozenset({
    "acos", "asin", "cosh", "erfinv", "exp", "expm1", "log", "log10", "log2", "log1p", "reciprocal", "rsqrt", "sinh",
    "tan", "pow", "softplus", "layer_norm", "native_layer_norm", "rms_norm", "group_norm", "frobenius_norm",
    "nuclear_norm", "cosine_similarity", "dist", "pdist", "cdist", "renorm", "logsumexp", "upsample_nearest1d",
    "_upsample_nearest_exact1d", "upsample_nearest2d", "_upsample_nearest_exact2d", "upsample_nearest3d",
    "_upsample_nearest_exact3d", "upsample_linear1d", "upsample_bilinear2d", "_upsample_bilinear2d_aa",
    "upsample_trilinear3d", "upsample_bicubic2d", "_upsample_bicubic2d_aa"})
# these read their half input as it is and write fp32 (autocast passes dtype=float32): no cast kernel
_AUTOCAST_TO_FLOAT_OUTPUT = frozenset({"prod", "cumprod", "cumsum", "linalg_vector_norm", "linalg_matrix_norm", "sum"})
_AUTOCAST_HALF_TO_FLOAT = frozenset({"_softmax", "_log_softmax"})  # their half_to_float argument
# ops that launch no kernel and move no data: metadata, allocation, scalar reads
_NO_KERNEL = frozenset({"detach", "lift_fresh", "empty", "empty_like", "empty_strided", "new_empty",
                        "new_empty_strided", "_local_scalar_dense", "alias", "_unsafe_view", "scalar_tensor",
                        "_reshape_alias", "resize_", "set_", "item", "sym_size", "sym_stride", "sym_numel",
                        "is_same_size", "_has_compatible_shallow_copy_type"})


@dataclass(frozen=True)
class Kernel:
    """One kernel of a forward: its `op_class`, FLOPs (2 per multiply-add) and bytes read + written."""
    op_class: str
    flops: float
    bytes: float


@dataclass(frozen=True)
class TracedOp:
    """One counted op of a forward, with the storages it read and wrote: ``(storage id, bytes)`` pairs;
    `eager_only` ops (cuDNN's layout transposes) do not run in the compiled runtime."""
    name: str
    op_class: str
    flops: float
    inputs: tuple[tuple[int, int], ...]
    outputs: tuple[tuple[int, int], ...]
    eager_only: bool = False


def _storage_key(tensor: torch.Tensor) -> int:
    return tensor.untyped_storage()._cdata


def _nbytes(tensor: torch.Tensor) -> int:
    """Bytes one pass over `tensor` moves: its elements, or its storage where it is smaller (expanded tensors)."""
    return min(tensor.numel() * tensor.element_size(), tensor.untyped_storage().nbytes())


def _tensors(tree: object) -> list[torch.Tensor]:
    seen, out = set(), []
    for leaf in tree_leaves(tree):
        if isinstance(leaf, torch.Tensor) and id(leaf) not in seen:
            seen.add(id(leaf))
            out.append(leaf)
    return out


def _conv_class(args: tuple) -> str:
    weight = args[1]
    return "dwconv" if weight.dim() >= 3 and weight.shape[1] == 1 and weight.shape[0] > 1 else "conv"


def _batch_norm_trains(name: str, args: tuple) -> bool:
    """Whether a batch-norm op computes batch statistics (its `training` argument) rather than using running ones."""
    if name == "_native_batch_norm_legit_no_training":
        return False
    index = 5 if name in ("native_batch_norm", "cudnn_batch_norm", "batch_norm") else 5
    return bool(args[index]) if len(args) > index and isinstance(args[index], bool) else True


def _op_class(name: str, args: tuple) -> str:
    if name in _BATCH_NORMS and not _batch_norm_trains(name, args):
        return "elementwise"  # running statistics: a per-channel affine map, no reduction
    if name in _GEMM:
        return "gemm"
    if name in _CONV:
        return _conv_class(args)
    if name in _REDUCTIONS:
        return "norm"
    return "elementwise"


def _needs_layout_transposes(name: str, op_class: str, args: tuple) -> bool:
    """A half-precision dense convolution on a tensor that is not channels-last (see the module docstring)."""
    if op_class != "conv" or name not in _CONV:
        return False
    x = args[0]
    return (x.dim() == 4 and x.dtype in (torch.float16, torch.bfloat16)
            and not x.is_contiguous(memory_format=torch.channels_last))


def _reads_half(args: tuple) -> bool:
    return bool(args) and isinstance(args[0], torch.Tensor) and args[0].dtype in (torch.float16, torch.bfloat16)


class _Tracer(TorchDispatchMode):
    """Records every op that launches a kernel as a `TracedOp`; inside a fused region it only adds up FLOPs.
    With `autocast` (a half dtype) it applies CUDA autocast's casts, counting each cast as a kernel; fp32
    parameters are cast once per forward (autocast's cast cache)."""

    def __init__(self, autocast: torch.dtype | None = None, parameters: frozenset[int] = frozenset()) -> None:
        super().__init__()
        self.ops: list[TracedOp] = []
        self.keep_alive: list[torch.Tensor] = []  # storage ids stay unique while the trace lives
        self.fused_depth = 0
        self.fused_flops = 0.0
        self.autocast = autocast
        self.parameters = parameters  # storage ids of the module's parameters
        self.cast_cache: dict[tuple[int, torch.dtype], torch.Tensor] = {}

    def record(self, name: str, op_class: str, flops: float, inputs: list[torch.Tensor],
               outputs: list[torch.Tensor], eager_only: bool = False) -> None:
        self.keep_alive.extend(inputs + outputs)
        self.ops.append(TracedOp(name, op_class, float(flops), tuple((_storage_key(t), _nbytes(t)) for t in inputs),
                                 tuple((_storage_key(t), _nbytes(t)) for t in outputs), eager_only))

    def cast(self, tensor: torch.Tensor, dtype: torch.dtype, record: bool) -> torch.Tensor:
        """`tensor` in `dtype`, the cast counted as a kernel (by hand where `record`: inside this mode's own
        dispatch; above it, the dispatch of ``.to`` counts it); parameters are cast once per forward."""
        key = (_storage_key(tensor), dtype)
        cacheable = key[0] in self.parameters
        if cacheable and key in self.cast_cache:
            return self.cast_cache[key]
        out = tensor.to(dtype)
        if record and not self.fused_depth:
            self.record("_to_copy", "elementwise", 0.0, [tensor], [out])
        if cacheable:
            self.cast_cache[key] = out
        return out

    def autocast_args(self, name: str, args: tuple, kwargs: dict, record: bool = True) -> tuple[tuple, dict]:
        """`args`/`kwargs` as CUDA autocast hands them to op `name` (`record`: see `cast`)."""
        if self.autocast is None:
            return args, kwargs
        if name in _AUTOCAST_HALF:
            source, target = torch.float32, self.autocast
        elif name in _AUTOCAST_FLOAT:
            source, target = self.autocast, torch.float32
        elif record and _reads_half(args) and name in _AUTOCAST_TO_FLOAT_OUTPUT:
            return args, {**kwargs, "dtype": torch.float32}
        elif record and _reads_half(args) and name in _AUTOCAST_HALF_TO_FLOAT:
            return (*args[:2], True, *args[3:]), kwargs
        else:
            return args, kwargs
        convert = lambda t: (self.cast(t, target, record)  # noqa: E731
                             if isinstance(t, torch.Tensor) and t.dtype == source else t)
        return tree_map(convert, args), tree_map(convert, kwargs)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        packet = func.overloadpacket
        name = packet.__name__
        args, kwargs = self.autocast_args(name, args, kwargs)
        out = func(*args, **kwargs)
        if func.is_view or torch.Tag.inplace_view in func.tags or name in _NO_KERNEL:
            return out
        flops = flop_registry[packet](*args, **kwargs, out_val=out) if packet in flop_registry else 0
        if self.fused_depth:
            self.fused_flops += flops
            return out
        op_class = _op_class(name, args)
        transposes = _needs_layout_transposes(name, op_class, args)
        if transposes:  # NCHW -> NHWC before the kernel
            self.record("layout_transpose", "elementwise", 0.0, [args[0]], [torch.empty_like(args[0])], True)
        self.record(name, op_class, flops, _tensors((args, kwargs)), _tensors(out))
        if transposes:  # and the output back to NCHW
            first = _tensors(out)[0]
            self.record("layout_transpose", "elementwise", 0.0, [torch.empty_like(first)], [first], True)
        return out

    @staticmethod
    def sdpa_flops(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> float:
        return float(sdpa_flop_count(q.shape, k.shape, v.shape))

    def fused(self, name: str, run: Callable[[], torch.Tensor], inputs: tuple[torch.Tensor, ...]) -> torch.Tensor:
        """Run a fused op's reference for its FLOPs and output, recording one ``attention`` kernel."""
        self.fused_depth += 1
        before = self.fused_flops
        try:
            out = run()
        finally:
            self.fused_depth -= 1
        flops = self.fused_flops - before
        if not self.fused_depth:
            self.fused_flops = 0.0
            self.record(name, "attention", flops, list(inputs), _tensors(out))
        return out


class _FusedAttention(TorchFunctionMode):
    """``F.scaled_dot_product_attention`` as one kernel (flash / memory-efficient attention), not its decomposition."""

    def __init__(self, tracer: _Tracer) -> None:
        super().__init__()
        self.tracer = tracer

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        # autocast works above PyTorch's composite ops (conv2d with string padding checks dtypes before it
        # reaches aten.convolution), so its casts are applied here too; the dispatch of .to() counts them
        args, kwargs = self.tracer.autocast_args(getattr(func, "__name__", ""), args, kwargs, record=False)
        if func is not F.scaled_dot_product_attention:
            return func(*args, **kwargs)
        q, k, v = args[:3]
        flops = self.tracer.sdpa_flops(q, k, v)
        out = torch.empty(*q.shape[:-1], v.shape[-1], dtype=q.dtype, device=q.device)
        mask = kwargs.get("attn_mask", args[3] if len(args) > 3 else None)
        inputs = [q, k, v] + ([mask] if isinstance(mask, torch.Tensor) else [])
        if self.tracer.fused_depth:  # inside a fused op: only its FLOPs count
            self.tracer.fused_flops += flops
        else:
            self.tracer.record("scaled_dot_product_attention", "attention", flops, inputs, [out])
        return out


def trace(module: nn.Module, example: torch.Tensor, fuse_project_kernels: bool,
          autocast: torch.dtype | None = None) -> tuple[list[TracedOp], set[int]]:
    """The ops one forward of `module` on meta-device `example` runs, and the storage ids of its outputs.

    `fuse_project_kernels`: count each of the project's attention ops (`kernels`) as one kernel (the Triton
    implementation) instead of its reference's ops (``torch``). `autocast`: the forward runs under CUDA autocast
    to this dtype (module and example in fp32)."""
    parameters = frozenset(_storage_key(p) for p in module.parameters())
    tracer = _Tracer(autocast, parameters)
    with torch.no_grad(), _FusedAttention(tracer), tracer:
        if fuse_project_kernels:
            with kernels.observe_fused_kernels(tracer.fused):
                out = module(example)
        else:
            out = module(example)
    outputs = _tensors(out)
    tracer.keep_alive.extend(outputs)
    return tracer.ops, {_storage_key(t) for t in outputs}


def _eager(ops: list[TracedOp]) -> list[Kernel]:
    return [Kernel(op.op_class, op.flops, float(sum(b for _, b in op.inputs) + sum(b for _, b in op.outputs)))
            for op in ops]


def _find(parent: list[int], i: int) -> int:
    while parent[i] != i:
        parent[i] = parent[parent[i]]
        i = parent[i]
    return i


def _compiled(ops: list[TracedOp], output_keys: set[int]) -> list[Kernel]:
    """Compute ops as they are; each connected group of the other ops as ``max(1, reductions)`` fused kernels
    moving the group's outside inputs once and the tensors used outside it (or returned) once."""
    producer: dict[int, int] = {}  # storage id -> op that wrote it last
    sources: list[list[int | None]] = []  # per op, per input: the op that had written it when it was read
    readers: dict[int, set[int]] = {}
    parent = list(range(len(ops)))
    light = [op.op_class not in COMPUTE_CLASSES for op in ops]
    for index, op in enumerate(ops):
        sources.append([producer.get(key) for key, _ in op.inputs])
        for (key, _), source in zip(op.inputs, sources[-1]):
            readers.setdefault(key, set()).add(index)
            if source is not None and light[index] and light[source]:
                parent[_find(parent, index)] = _find(parent, source)
        for key, _ in op.outputs:
            producer[key] = index
    groups: dict[int, list[int]] = {}
    for index in range(len(ops)):
        if light[index]:
            groups.setdefault(_find(parent, index), []).append(index)
    fused = [Kernel(op.op_class, op.flops, float(sum(b for _, b in op.inputs) + sum(b for _, b in op.outputs)))
             for op, is_light in zip(ops, light) if not is_light]
    for members in groups.values():
        inside = set(members)
        read: dict[int, int] = {}
        produced: dict[int, int] = {}
        for index in members:
            for (key, nbytes), source in zip(ops[index].inputs, sources[index]):
                if source not in inside:
                    read[key] = max(read.get(key, 0), nbytes)
            for key, nbytes in ops[index].outputs:
                produced[key] = max(produced.get(key, 0), nbytes)
        written = sum(nbytes for key, nbytes in produced.items()
                      if key in output_keys or readers.get(key, set()) - inside)
        reductions = sum(ops[i].op_class == "norm" for i in members)
        count = max(1, reductions)
        moved = float(sum(read.values()) + written) / count
        fused.extend(Kernel("norm" if reductions else "elementwise", 0.0, moved) for _ in range(count))
    return fused


def kernels_of(ops: list[TracedOp], output_keys: set[int], runtime: str) -> list[Kernel]:
    """The kernels `ops` run as in `runtime` (one of `RUNTIMES`)."""
    if runtime == "eager":
        return _eager(ops)
    if runtime == "compiled":
        return _compiled([op for op in ops if not op.eager_only], output_keys)
    raise ValueError(f"runtime must be one of {', '.join(RUNTIMES)}, got {runtime!r}")


def count_kernels(build: Callable[[], nn.Module], example_shape: tuple[int, ...], dtype: torch.dtype,
                  fuse_project_kernels: bool, runtimes: tuple[str, ...] = RUNTIMES,
                  autocast: torch.dtype | None = None) -> dict[str, list[Kernel]]:
    """Build the module on the meta device in `dtype` (fp32 under `autocast`), run one forward on an input of
    `example_shape` and return its kernels per runtime."""
    with torch.device("meta"):
        module = build().to(dtype).eval()
    example = torch.empty(example_shape, device="meta", dtype=dtype)
    ops, output_keys = trace(module, example, fuse_project_kernels, autocast)
    return {runtime: kernels_of(ops, output_keys, runtime) for runtime in runtimes}

