"""timm registration: ``timm.create_model("hnas_<name>", num_classes=..., features_only=True, out_indices=...)``.

The reference architectures are registered on import, as timm model families do (small `@register_model`
functions holding only data); `register_arch` registers any other `ArchSpec` under a name of its own.
"""
from __future__ import annotations

from typing import Any, Callable

from search_spaces._compat import import_timm
from search_spaces.backbone import HybridBackbone
from search_spaces.reference import CIFAR_REFERENCE_ARCHS, REFERENCE_ARCHS, TINY_ARCHS
from search_spaces.spec import ArchSpec

timm = import_timm()
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD  # noqa: E402
from timm.models import build_model_with_cfg, register_model  # noqa: E402

__all__ = ["MODEL_PREFIX", "create_hybrid", "register_arch", "default_cfgs"]

MODEL_PREFIX = "hnas_"
default_cfgs: dict[str, dict[str, Any]] = {}  # read by timm's register_model for each name


def _cfg(spec: ArchSpec, resolution: int = 224) -> dict[str, Any]:
    return {"url": "", "num_classes": spec.head.num_classes, "input_size": (3, resolution, resolution),
            "pool_size": None, "crop_pct": 0.9, "interpolation": "bicubic", "mean": IMAGENET_DEFAULT_MEAN,
            "std": IMAGENET_DEFAULT_STD, "first_conv": "stem", "classifier": "head.fc"}


def create_hybrid(variant: str, spec: ArchSpec, pretrained: bool = False, **kwargs: Any) -> HybridBackbone:
    """Build `spec` through timm's `build_model_with_cfg` (the one place it is called)."""
    out_indices = kwargs.pop("out_indices", tuple(range(len(spec.stages))))
    return build_model_with_cfg(HybridBackbone, variant, pretrained, spec=spec,
                                feature_cfg=dict(flatten_sequential=True, out_indices=out_indices), **kwargs)


def register_arch(name: str, spec: ArchSpec, resolution: int = 224) -> Callable[..., HybridBackbone]:
    """Register `spec` with timm as `name` (re-registering a name replaces it); returns the entrypoint."""
    if not name.isidentifier():
        raise ValueError(f"model name {name!r} must be a Python identifier (letters, digits, underscores)")
    default_cfgs[name] = _cfg(spec, resolution)

    def entrypoint(pretrained: bool = False, **kwargs: Any) -> HybridBackbone:
        return create_hybrid(name, spec, pretrained, **kwargs)

    entrypoint.__name__ = entrypoint.__qualname__ = name
    entrypoint.__module__ = __name__
    entrypoint.__doc__ = f"{name}: {spec.canonical()}"
    return register_model(entrypoint)


for _name, _spec in {**REFERENCE_ARCHS, **CIFAR_REFERENCE_ARCHS, **TINY_ARCHS}.items():
    register_arch(MODEL_PREFIX + _name, _spec, resolution=224 if _name in REFERENCE_ARCHS else 32)
