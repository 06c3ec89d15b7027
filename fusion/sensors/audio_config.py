"""The configs of the microphone backends (`device`: PortAudio input, `file`: audio files): light.

The sources that read them are in `fusion.sensors.audio`, which loads libsndfile and soxr (and
PortAudio when a device opens); this module only declares the backends.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from fusion.errors import InputError
from fusion.sample import Modality
from fusion.sensors.registry import register_backend
from fusion.sensors.source import Backend, SourceConfig


class _AudioConfig(SourceConfig):
    """Fields every microphone backend has."""

    sample_rate: Annotated[int, Field(gt=0)] = 16000  # delivered samples per second
    chunk_s: Annotated[float, Field(gt=0)] = 0.05  # seconds of audio per Frame

    @model_validator(mode="after")
    def _chunk_has_samples(self) -> _AudioConfig:
        if self.chunk_samples < 1:
            raise InputError(f"chunk_s={self.chunk_s} is less than one sample at {self.sample_rate} Hz")
        return self

    @property
    def chunk_samples(self) -> int:
        return round(self.chunk_s * self.sample_rate)


class MicrophoneDeviceConfig(_AudioConfig):
    backend: Literal["device"] = "device"
    device: int | str | None = None  # PortAudio device index or name (substring); None: default input
    channels: Annotated[int, Field(gt=0)] = 1  # channels opened on the device, averaged to mono


class MicrophoneFileConfig(_AudioConfig):
    backend: Literal["file"] = "file"
    path: str  # .wav, .flac or .ogg; resampled to sample_rate when its rate differs


MICROPHONE_DEVICE = register_backend(
    Backend(
        "device", {Modality.MICROPHONE: MicrophoneDeviceConfig}, "fusion.sensors.audio:MicrophoneDeviceSource"
    )
)
MICROPHONE_FILE = register_backend(
    Backend("file", {Modality.MICROPHONE: MicrophoneFileConfig}, "fusion.sensors.audio:MicrophoneFileSource")
)
