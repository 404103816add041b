"""The hybrid search space: `ArchSpec` and its validation, the space and its sampling, the mixers, the backbone
builder (timm conventions), reference architectures, and FLOPs/params through fvcore.

Importing this package registers the reference architectures with timm as ``hnas_<name>``.
"""
from __future__ import annotations

from search_spaces.mixers import build_block  # importing it registers the six built-in mixers
from search_spaces.backbone import HybridBackbone, build_model
from search_spaces.deploy import fold_batchnorm
from search_spaces.flops import count_flops, count_params, module_flops
from search_spaces.reference import CIFAR_REFERENCE_ARCHS, REFERENCE_ARCHS, TINY_ARCHS
from search_spaces.mixer_registry import MIXERS, MixerEntry, load_entry_points, mixer_entry, register_mixer
from search_spaces.registry import MODEL_PREFIX, register_arch
from search_spaces.space import (
    CIFAR_SPACE, DEFAULT_SPACE, MAX_RESOLUTION, MIN_RESOLUTION, SPACES, SearchSpace, SpaceError, load_space,
    sample_arch, sample_archs,
)
from search_spaces.spec import (
    MIXER_TYPES, SCHEMA_VERSION, ArchSpec, ConvMixer, DownsampleSpec, HeadSpec, LinearMixer, MixerSpec, QnAMixer,
    SingleHeadMixer, SpecError, StageSpec, StemSpec, StripMixer, WindowMixer,
)

__all__ = [
    "ArchSpec", "StemSpec", "StageSpec", "DownsampleSpec", "HeadSpec", "MixerSpec", "MIXER_TYPES", "SCHEMA_VERSION",
    "ConvMixer", "WindowMixer", "LinearMixer", "SingleHeadMixer", "StripMixer", "QnAMixer", "SpecError",
    "SearchSpace", "DEFAULT_SPACE", "CIFAR_SPACE", "SPACES", "SpaceError", "load_space", "sample_arch", "sample_archs",
    "MIN_RESOLUTION", "MAX_RESOLUTION",
    "HybridBackbone", "build_model", "fold_batchnorm", "register_arch", "MODEL_PREFIX",
    "REFERENCE_ARCHS", "CIFAR_REFERENCE_ARCHS", "TINY_ARCHS",
    "count_flops", "count_params", "module_flops",
    "MixerEntry", "MIXERS", "register_mixer", "mixer_entry", "build_block",
]

load_entry_points()  # users' own mixers (entry-point group hybrid_nas.mixers), in every process
