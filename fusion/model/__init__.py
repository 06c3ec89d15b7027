"""The Perceiver model: position encoding, attention blocks, multimodal adapter, detection head, presets."""

from fusion.model.config import InputConfig, ModelConfig, PositionKind
from fusion.model.detection import DetectionHeadConfig, DetectionOutput, to_objects
from fusion.model.multimodal import ByteArray, ModalityInput, MultimodalAdapter, collate
from fusion.model.perceiver import Perceiver, PerceiverOutput
from fusion.model.position_encoding import fourier_features, grid_positions
from fusion.model.presets import build_model, load_preset, preset_config, preset_names
from fusion.model.temporal import stack_sweeps

__all__ = [
    "ByteArray",
    "DetectionHeadConfig",
    "DetectionOutput",
    "InputConfig",
    "ModalityInput",
    "ModelConfig",
    "MultimodalAdapter",
    "Perceiver",
    "PerceiverOutput",
    "PositionKind",
    "build_model",
    "collate",
    "fourier_features",
    "grid_positions",
    "load_preset",
    "preset_config",
    "preset_names",
    "stack_sweeps",
    "to_objects",
]
