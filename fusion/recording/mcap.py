"""Recording sensor streams as ROS 2 messages in MCAP (`fusion record --format mcap`).

The output is a ROS 2 bag folder with mcap storage (`metadata.yaml` and one `.mcap` file):
Foxglove and `ros2 bag play` open it, and the `rosbag` source backend reads it back. One topic
per sensor, named `/<sensor id>/image_raw` (sensor_msgs/Image, rgb8), `/<sensor id>/points`
(sensor_msgs/PointCloud2: x, y, z, intensity float32) and `/<sensor id>/audio`
(audio_common_msgs/AudioDataStamped, F32LE mono, described once on `/<sensor id>/audio_info`).
The message definitions are embedded, so the custom audio type needs no install to be read.

header.stamp and the log time are both `Frame.timestamp`, to the nanosecond: the frames come
back with their own clock (monotonic for live devices, scene time for the simulator), as from an
Arrow recording, and the payloads come back unchanged.

Predictions go to MCAP through `fusion.sinks.mcap`, which shares the message helpers.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rosbags.interfaces import Connection
from rosbags.rosbag2 import StoragePlugin, Writer

from fusion.errors import InputError, OutputExistsError
from fusion.sample import Frame, Modality
from fusion.sensors.ros.messages import audio_messages, cloud_message, image_message
from fusion.sensors.ros.types import (
    AUDIO_DATA_STAMPED,
    AUDIO_INFO,
    AUDIO_INFO_SUFFIX,
    IMAGE,
    POINT_CLOUD2,
    TOPIC_SUFFIX,
    RosVersion,
    header,
    sensor_topic,
    to_ns,
    typestore,
)

_MSGTYPE = {Modality.CAMERA: IMAGE, Modality.LIDAR: POINT_CLOUD2, Modality.MICROPHONE: AUDIO_DATA_STAMPED}


class McapWriter:
    """Writes frames as ROS 2 messages to a new MCAP bag folder; `close()` finishes it.

    Messages go to the file as they come (rosbags writes chunk by chunk), so memory stays flat.
    """

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)
        if self.directory.exists():
            raise OutputExistsError(
                f"{self.directory}: already exists (an MCAP recording is written to a new folder)"
            )
        self._store = typestore(RosVersion.ROS2)
        self._writer = Writer(self.directory, version=9, storage_plugin=StoragePlugin.MCAP)
        self._writer.open()
        self._topics: dict[str, tuple[Modality, Connection]] = {}
        self._closed = False

    def write(self, frame: Frame) -> None:
        """Write one frame as a message on its sensor's topic."""
        if self._closed:
            raise InputError(f"{self.directory}: recording already closed")
        ns = to_ns(frame.timestamp)
        hdr = header(self._store, RosVersion.ROS2, ns, frame.sensor_id)
        types = self._store.types
        msg: Any
        match frame.modality:
            case Modality.CAMERA:
                msg = image_message(types, frame.data, header=hdr)
            case Modality.LIDAR:
                msg = cloud_message(types, frame.data, header=hdr)
            case Modality.MICROPHONE:
                assert frame.sample_rate is not None  # the Frame contract
                msg, info = audio_messages(types, frame.data, frame.sample_rate, header=hdr)
                if frame.sensor_id not in self._topics:
                    topic = sensor_topic(frame.sensor_id, AUDIO_INFO_SUFFIX)
                    conn = self._writer.add_connection(topic, AUDIO_INFO, typestore=self._store)
                    self._writer.write(conn, ns, self._store.serialize_cdr(info, AUDIO_INFO))
        conn = self._connection(frame)
        self._writer.write(conn, ns, self._store.serialize_cdr(msg, _MSGTYPE[frame.modality]))

    def _connection(self, frame: Frame) -> Connection:
        known = self._topics.get(frame.sensor_id)
        if known is None:
            topic = sensor_topic(frame.sensor_id, TOPIC_SUFFIX[frame.modality])
            conn = self._writer.add_connection(topic, _MSGTYPE[frame.modality], typestore=self._store)
            known = self._topics[frame.sensor_id] = (frame.modality, conn)
        modality, conn = known
        if modality is not frame.modality:
            raise InputError(
                f"sensor {frame.sensor_id!r}: a {frame.modality.value} frame in a {modality.value} stream"
            )
        return conn

    def close(self) -> None:
        """Finish the .mcap file and write metadata.yaml. Idempotent."""
        if not self._closed:
            self._closed = True
            self._writer.close()

    def __enter__(self) -> McapWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
