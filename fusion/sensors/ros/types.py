"""The ROS message types fusion reads and writes, and typestores that know all of them.

rosbags ships the standard ROS 1 / ROS 2 message sets (sensor_msgs, std_msgs, ...), but not
`audio_common_msgs` nor `velodyne_msgs`: their definitions, as the packages publish them, are
registered here. A bag normally embeds the definitions of its types (ROS 1 always, ROS 2 MCAP
and Jazzy+ sqlite3); these typestores are the fallback for bags that do not.
"""

from __future__ import annotations

import functools
from enum import IntEnum

from rosbags.typesys import Stores, get_types_from_msg, get_typestore
from rosbags.typesys.store import Typestore

from fusion.sample import Modality

IMAGE = "sensor_msgs/msg/Image"
COMPRESSED_IMAGE = "sensor_msgs/msg/CompressedImage"
POINT_CLOUD2 = "sensor_msgs/msg/PointCloud2"
VELODYNE_SCAN = "velodyne_msgs/msg/VelodyneScan"
AUDIO_DATA = "audio_common_msgs/msg/AudioData"
AUDIO_DATA_STAMPED = "audio_common_msgs/msg/AudioDataStamped"
AUDIO_INFO = "audio_common_msgs/msg/AudioInfo"

# Which modality each message type can feed.
MODALITY_OF: dict[str, Modality] = {
    IMAGE: Modality.CAMERA,
    COMPRESSED_IMAGE: Modality.CAMERA,
    POINT_CLOUD2: Modality.LIDAR,
    VELODYNE_SCAN: Modality.LIDAR,
    AUDIO_DATA: Modality.MICROPHONE,
    AUDIO_DATA_STAMPED: Modality.MICROPHONE,
}
HEADERLESS = frozenset({AUDIO_DATA})  # types whose messages carry no header.stamp


class RosVersion(IntEnum):
    ROS1 = 1
    ROS2 = 2


# ros-drivers/audio_common (ROS 1 noetic-devel and ROS 2 ros2 branches: same fields).
_AUDIO_DEFS = {
    AUDIO_DATA: "uint8[] data\n",
    AUDIO_DATA_STAMPED: "std_msgs/Header header\naudio_common_msgs/AudioData audio\n",
    AUDIO_INFO: (
        "uint8 channels\nuint32 sample_rate\nstring sample_format\nuint32 bitrate\nstring coding_format\n"
    ),
}
# ros-drivers/velodyne: a scan is one rotation's raw 1206-byte data packets.
_VELODYNE_DEFS = {
    RosVersion.ROS1: {
        "velodyne_msgs/msg/VelodynePacket": "time stamp\nuint8[1206] data\n",
        VELODYNE_SCAN: "Header header\nvelodyne_msgs/VelodynePacket[] packets\n",
    },
    RosVersion.ROS2: {
        "velodyne_msgs/msg/VelodynePacket": "builtin_interfaces/Time stamp\nuint8[1206] data\n",
        VELODYNE_SCAN: "std_msgs/Header header\nvelodyne_msgs/VelodynePacket[] packets\n",
    },
}


@functools.cache
def _store_types(version: RosVersion) -> Typestore:
    store = get_typestore(Stores.ROS1_NOETIC if version is RosVersion.ROS1 else Stores.ROS2_HUMBLE)
    for name, text in {**_AUDIO_DEFS, **_VELODYNE_DEFS[version]}.items():
        store.register(get_types_from_msg(text, name))
    return store


def typestore(version: RosVersion) -> Typestore:
    """ROS 1 noetic or ROS 2 humble types plus audio_common_msgs and velodyne_msgs (shared: do not
    register more types in it)."""
    return _store_types(version)


def stamp_ns(stamp: object) -> int:
    """A builtin_interfaces/Time (sec, nanosec) as integer nanoseconds."""
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)  # type: ignore[attr-defined]


def seconds(ns: int) -> float:
    """Nanoseconds as float seconds, rounded once (so `seconds(to_ns(t))` is stable)."""
    return ns / 1e9


def to_ns(t: float) -> int:
    """Float seconds as the nearest integer nanosecond."""
    return round(t * 1e9)


def header(store: Typestore, version: RosVersion, ns: int, frame_id: str, *, seq: int = 0) -> object:
    """A std_msgs/Header stamped `ns` nanoseconds (ROS 1 headers also carry a sequence number)."""
    stamp = store.types["builtin_interfaces/msg/Time"](sec=ns // 1_000_000_000, nanosec=ns % 1_000_000_000)
    if version is RosVersion.ROS1:
        return store.types["std_msgs/msg/Header"](seq=seq, stamp=stamp, frame_id=frame_id)
    return store.types["std_msgs/msg/Header"](stamp=stamp, frame_id=frame_id)


# What `fusion record --format mcap` names a sensor's topic: /<sensor id>/<suffix>.
TOPIC_SUFFIX = {Modality.CAMERA: "image_raw", Modality.LIDAR: "points", Modality.MICROPHONE: "audio"}
AUDIO_INFO_SUFFIX = "audio_info"


def sensor_topic(sensor_id: str, suffix: str) -> str:
    """/<sensor id>/<suffix>, with characters a ROS name may not hold replaced by '_'."""
    name = "".join(c if c.isalnum() or c == "_" else "_" for c in sensor_id)
    return f"/{name}/{suffix}"
