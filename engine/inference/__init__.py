"""Local nnU-Net v2 inference a GUI can drive: progress per stage and tile, cancel within a second,
CUDA / MPS / CPU with out-of-memory fallback, any nnU-Net v2 model (see engine.models).

Public API::

    segment(case, model, SegmentOptions(mode="fast", device="auto", ...), progress=None, cancel=None,
            record=None) -> SegmentationResult        # model: ModelInfo, [ModelInfo, ...] or ModelSetChoice
    available_devices() -> list[str]
    apply_result(case, result) -> Case          # a copy of the case with the labels + provenance
    combine_label_maps(maps), PRECEDENCE_RULE, STAGES, MODES, clear_model_cache()

torch and nnunetv2 are imported only when a function needs them.
"""
from __future__ import annotations

from .device import available_devices, resolve_device
from .pipeline import (MODES, PRECEDENCE_RULE, STAGES, ModelSetChoice, RunRecord, SegmentationResult, SegmentOptions,
                       apply_result, clear_model_cache, combine_label_maps, keep_unsegmented_structures, segment)

__all__ = ["segment", "SegmentOptions", "RunRecord", "ModelSetChoice", "available_devices", "resolve_device", "SegmentationResult", "apply_result",
           "combine_label_maps", "keep_unsegmented_structures", "clear_model_cache", "PRECEDENCE_RULE", "STAGES", "MODES"]
