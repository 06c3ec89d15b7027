"""The config of the `simulated` backend (camera, microphone and LiDAR looking at one simulated
world): light. The source is `fusion.sensors.simulated.SimulatedSource`; its camera renders with
OpenCV and its LiDAR ray-casts with open3d, each loaded only when that sensor is built.

Each sensor's own settings (`CameraSensor`, `LidarSensor`, `MicrophoneSensor`: what the sensor
is) are shared with the training data (`fusion.training.data`), so both render the same sensor.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Literal

from pydantic import Field, Strict, ValidationInfo, field_validator

from fusion.config import StrictModel
from fusion.errors import InputError
from fusion.sample import Modality
from fusion.sensors.registry import register_backend
from fusion.sensors.source import Backend, SourceConfig
from fusion.sim.world import WorldConfig


class Clock(StrEnum):
    """What a real-time simulated frame's `timestamp` is on (its `wall_time` is Unix time)."""

    UNIX = "unix"  # the scene clock itself: every simulated sensor anywhere agrees on the time
    # This host's monotonic clock, as live devices stamp: a simulated sensor then fuses with a
    # webcam on the same ticks (the demo's stand-ins for absent devices).
    MONOTONIC = "monotonic"


class SimulatedConfig(SourceConfig):
    backend: Literal["simulated"] = "simulated"
    world: WorldConfig = WorldConfig()
    rate_hz: float = Field(default=10.0, gt=0)  # frames (audio: chunks) per second
    start_s: float = 0.0  # scene time of the first frame
    duration_s: float | None = Field(default=None, gt=0)  # None: endless
    realtime: bool = False  # pace reads to the scene clock
    clock: Annotated[Clock, Strict(False)] = Clock.UNIX  # realtime: what timestamps are on
    # Realtime: seconds of frames the simulated device holds for a reader that falls behind once
    # streaming; older ones are lost (counted as dropped 'overrun'), as a camera's, a sound
    # card's or a LiDAR driver's buffer does (`fusion.clock.DeviceBuffer`).
    buffer_s: float = Field(default=1.0, gt=0)
    # Realtime: how long before its due time a frame may be rendered. The simulated device renders
    # at a lower CPU priority than its reader into that slack, so the simulator's own cost (a real device
    # spends it on its own hardware) yields to the pipeline it feeds instead of delaying it.
    render_ahead_s: float = Field(default=0.25, ge=0)

    @field_validator("clock")
    @classmethod
    def _clock_needs_realtime(cls, clock: Clock, info: ValidationInfo) -> Clock:
        if clock is not Clock.UNIX and not info.data.get("realtime"):
            raise InputError(f"{clock.value} needs realtime: true (without it, timestamps are scene time)")
        return clock


class CameraSensor(StrictModel):
    """The simulated camera itself (the live source's and the training data's)."""

    width: int = Field(default=320, ge=8)  # rendered size, pixels
    height: int = Field(default=240, ge=8)


class LidarSensor(StrictModel):
    """The simulated LiDAR itself."""

    beams: int = Field(default=16, ge=1)
    azimuth_steps: int = Field(default=900, ge=8)  # 0.4 degree resolution


class MicrophoneSensor(StrictModel):
    """The simulated microphone itself."""

    sample_rate: int = Field(default=16000, ge=1000)


class SimCameraConfig(SimulatedConfig, CameraSensor):
    rate_hz: float = Field(default=30.0, gt=0)


class SimLidarConfig(SimulatedConfig, LidarSensor):
    pass


class SimMicrophoneConfig(SimulatedConfig, MicrophoneSensor):
    rate_hz: float = Field(default=20.0, gt=0)  # 50 ms chunks


SIMULATED = register_backend(
    Backend(
        "simulated",
        {
            Modality.CAMERA: SimCameraConfig,
            Modality.LIDAR: SimLidarConfig,
            Modality.MICROPHONE: SimMicrophoneConfig,
        },
        "fusion.sensors.simulated:SimulatedSource",
    )
)
