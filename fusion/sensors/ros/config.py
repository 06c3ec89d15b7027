"""The config of the `rosbag` backend (one topic of a ROS 1 bag, a ROS 2 bag or an MCAP file): light.

The source that reads it is `fusion.sensors.ros.source.RosbagSource`, which loads rosbags (and
OpenCV, velodyne-decoder for the messages that need them); this module only declares the backend.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Literal

from pydantic import Field, Strict, field_validator

from fusion.sample import Modality
from fusion.sensors.registry import register_backend
from fusion.sensors.source import Backend, SourceConfig
from fusion.sensors.velodyne.config import model_name


class BagTime(StrEnum):
    HEADER = "header"  # header.stamp: when the sensor captured it
    RECEIVE = "receive"  # when the bag logged it


class SampleFormat(StrEnum):
    """Raw PCM sample formats by their GStreamer names (what AudioInfo.sample_format carries)."""

    S8 = "S8"
    U8 = "U8"
    S16LE = "S16LE"
    S16BE = "S16BE"
    S24LE = "S24LE"  # three bytes per sample
    S32LE = "S32LE"
    S32BE = "S32BE"
    F32LE = "F32LE"
    F32BE = "F32BE"
    F64LE = "F64LE"


class RosbagConfig(SourceConfig):
    """One topic as a sensor; a camera topic needs nothing more."""

    backend: Literal["rosbag"] = "rosbag"
    path: str  # a ROS 1 .bag, a ROS 2 bag folder (sqlite3 or mcap storage) or a .mcap file
    topic: str  # the topic to read, e.g. /camera/image_raw
    time: Annotated[BagTime, Strict(False)] = BagTime.HEADER


class RosbagMicrophoneConfig(RosbagConfig):
    # The audio_common_msgs/AudioInfo topic; None: `<namespace of topic>/audio_info`, or the
    # bag's only AudioInfo topic. Not read when `sample_rate` is set.
    info_topic: str | None = None
    # Without an AudioInfo in the bag: what the bytes hold.
    sample_rate: int | None = Field(default=None, gt=0)
    channels: int = Field(default=1, gt=0)
    sample_format: Annotated[SampleFormat, Strict(False)] = SampleFormat.S16LE


class RosbagLidarConfig(RosbagConfig):
    # VelodyneScan topics only: the sensor model (None: from the packets) and calibration YAML.
    model: str | None = None
    calibration: str | None = None

    @field_validator("model")
    @classmethod
    def _known_model(cls, value: str | None) -> str | None:
        model_name(value)
        return value


ROSBAG = register_backend(
    Backend(
        "rosbag",
        {
            Modality.CAMERA: RosbagConfig,
            Modality.LIDAR: RosbagLidarConfig,
            Modality.MICROPHONE: RosbagMicrophoneConfig,
        },
        "fusion.sensors.ros.source:RosbagSource",
    )
)
