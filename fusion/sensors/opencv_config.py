"""The configs of the OpenCV camera backends (`device`, `file`, `stream`): light, no cv2.

The sources that read them are in `fusion.sensors.opencv`, which loads OpenCV; this module only
declares the backends, so a config validates without it (as LeRobot's `configuration_opencv.py`
beside `camera_opencv.py`).
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from fusion.errors import InputError
from fusion.sample import Modality
from fusion.sensors.registry import register_backend
from fusion.sensors.source import Backend, SourceConfig


class _CaptureConfig(SourceConfig):
    """Fields every camera backend has."""

    width: Annotated[int, Field(gt=0)] | None = None  # resize at capture (with height), pixels
    height: Annotated[int, Field(gt=0)] | None = None

    @model_validator(mode="after")
    def _both_or_neither(self) -> _CaptureConfig:
        if (self.width is None) != (self.height is None):
            raise InputError(
                f"width and height must be given together (got width={self.width}, height={self.height})"
            )
        return self

    @property
    def size(self) -> tuple[int, int] | None:
        """(width, height) to resize to, as cv2.resize wants it, or None to keep the native size."""
        if self.width is None or self.height is None:
            return None
        return (self.width, self.height)


class CameraDeviceConfig(_CaptureConfig):
    backend: Literal["device"] = "device"
    index: Annotated[int, Field(ge=0)] = 0  # OpenCV device index (/dev/video<index> on Linux)


class CameraFileConfig(_CaptureConfig):
    backend: Literal["file"] = "file"
    path: str  # video file: .mp4 .avi .mkv .mov .webm, anything FFmpeg reads
    loop: bool = False  # start again at the end; timestamps keep increasing across passes


class CameraStreamConfig(_CaptureConfig):
    backend: Literal["stream"] = "stream"
    url: str  # rtsp://, http:// (MJPEG, MP4, ...), anything FFmpeg opens
    timeout_s: Annotated[float, Field(gt=0)] = 5.0  # give up opening or reading after this long


CAMERA_DEVICE = register_backend(
    Backend("device", {Modality.CAMERA: CameraDeviceConfig}, "fusion.sensors.opencv:CameraDeviceSource")
)
CAMERA_FILE = register_backend(
    Backend("file", {Modality.CAMERA: CameraFileConfig}, "fusion.sensors.opencv:CameraFileSource")
)
CAMERA_STREAM = register_backend(
    Backend("stream", {Modality.CAMERA: CameraStreamConfig}, "fusion.sensors.opencv:CameraStreamSource")
)
