"""The preprocessing contract: one Frame in, one model-ready Segment out.

Each modality module defines a preprocessor class with a config; all of them follow
`Preprocessor`. They are pure functions of the frame (and of a seed, for LiDAR sampling),
vectorized with no Python loop over pixels, samples or points, and raise ValueError naming
the sensor when a frame cannot be used.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Any, Protocol, cast

from fusion.config import StrictModel, parse_config
from fusion.sample import Frame, Modality, Segment


class Preprocessor(Protocol):
    modality: Modality

    def __call__(self, frame: Frame) -> Segment:
        """Turn one frame (for audio: the window the synchronizer cut) into a Segment."""
        ...


# modality -> (module, config class, preprocessor class); imported on first use.
_PREPROCESSORS: dict[Modality, tuple[str, str, str]] = {
    Modality.CAMERA: ("fusion.sensors.camera", "CameraPreprocessConfig", "CameraPreprocessor"),
    Modality.MICROPHONE: (
        "fusion.sensors.microphone",
        "MicrophonePreprocessConfig",
        "MicrophonePreprocessor",
    ),
    Modality.LIDAR: ("fusion.sensors.lidar", "LidarPreprocessConfig", "LidarPreprocessor"),
}


def make_preprocessor(
    modality: Modality, config: Mapping[str, Any] | StrictModel, *, source: str = "preprocess"
) -> Preprocessor:
    """The modality's preprocessor built from its config, or a mapping validated here (errors name `source`)."""
    module_name, config_name, class_name = _PREPROCESSORS[modality]
    module = importlib.import_module(module_name)
    config_cls = getattr(module, config_name)
    if isinstance(config, StrictModel):
        if not isinstance(config, config_cls):
            raise ValueError(f"{source}: a {type(config).__name__} is not a {config_cls.__name__}")
        cfg = config
    else:
        cfg = parse_config(config_cls, dict(config), source=source)
    return cast(Preprocessor, getattr(module, class_name)(cfg))


def preprocess_settings(
    modality: Modality, config: Mapping[str, Any], *, source: str = "preprocess"
) -> dict[str, Any]:
    """Every setting of the modality's preprocessor, defaults filled in (validated, as JSON values)."""
    module_name, config_name, _ = _PREPROCESSORS[modality]
    module = importlib.import_module(module_name)
    return parse_config(getattr(module, config_name), dict(config), source=source).model_dump(mode="json")
