"""Import timm on a CPU-only torch whose torchvision wheel was built for CUDA.

That torchvision registers fake kernels for ``torchvision::nms`` at import and fails with "operator
torchvision::nms does not exist" because the CPU torch has no such operator. Defining the two schemas first
makes the import work; nothing here runs when the plain import succeeds.
"""
from __future__ import annotations

import sys
from types import ModuleType

import torch

_torchvision_schemas: torch.library.Library | None = None  # kept alive: the schemas live as long as this object


def _define_torchvision_schemas() -> None:
    global _torchvision_schemas
    if _torchvision_schemas is None:
        _torchvision_schemas = torch.library.Library("torchvision", "DEF")
        _torchvision_schemas.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
        _torchvision_schemas.define("qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")


def import_timm() -> ModuleType:
    """Return the `timm` module, working around the missing torchvision operators when needed."""
    try:
        import timm
    except RuntimeError as error:
        if "torchvision::nms" not in str(error):
            raise
        for name in [n for n in sys.modules if n.split(".")[0] in ("torchvision", "timm")]:
            del sys.modules[name]  # drop the half-imported modules before trying again
        _define_torchvision_schemas()
        import timm
    return timm
