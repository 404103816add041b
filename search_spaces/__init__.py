"""The hybrid search space: `ArchSpec` and its validation, the space and its sampling, the mixers, the backbone
builder (timm conventions), reference architectures, and FLOPs/params through fvcore.

Names load on first use (`common.lazy`): the spec classes and resolution limits without torch, anything else
with the whole package, which registers the mixers (built-in and users' plug-ins of the entry-point group
``hybrid_nas.mixers``) and the reference architectures with timm as ``hnas_<name>``.
"""
from __future__ import annotations

import importlib

from common.lazy import lazy_namespace

_EXPORTS = {
    **dict.fromkeys(("ArchSpec", "StemSpec", "StageSpec", "DownsampleSpec", "HeadSpec", "MixerSpec", "MIXER_TYPES",
                     "SCHEMA_VERSION", "ConvMixer", "WindowMixer", "LinearMixer", "SingleHeadMixer", "StripMixer",
                     "QnAMixer", "SpecError", "MIN_RESOLUTION", "MAX_RESOLUTION", "mixer_types"), "spec"),
    **dict.fromkeys(("SearchSpace", "DEFAULT_SPACE", "CIFAR_SPACE", "SPACES", "SpaceError", "load_space",
                     "sample_arch", "sample_archs"), "space"),
    **dict.fromkeys(("MixerEntry", "MIXERS", "register_mixer", "mixer_entry", "load_entry_points"),
                    "mixer_registry"),
    "build_block": "mixers",
    **dict.fromkeys(("HybridBackbone", "build_model"), "backbone"),
    "fold_batchnorm": "deploy",
    **dict.fromkeys(("count_flops", "count_params", "module_flops"), "flops"),
    **dict.fromkeys(("REFERENCE_ARCHS", "CIFAR_REFERENCE_ARCHS", "TINY_ARCHS"), "reference"),
    **dict.fromkeys(("register_arch", "MODEL_PREFIX"), "registry"),
}
__all__ = sorted(_EXPORTS)


def _load_package(submodule: str) -> None:
    """Before any name but the spec's: the mixers and the timm registration of the reference architectures."""
    if submodule != "spec":
        importlib.import_module("search_spaces.registry")


__getattr__, __dir__ = lazy_namespace(__name__, _EXPORTS, before=_load_package)
