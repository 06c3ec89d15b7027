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

`McapPredictionSink` (`fusion run --output PATH.mcap`) writes predictions the same way, as
`fusion_msgs/msg/Prediction` messages on the sensors' clock, so they line up with the recording.
"""

from __future__ import annotations

import functools
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
from rosbags.interfaces import Connection
from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.typesys import Stores, get_types_from_msg, get_typestore
from rosbags.typesys.store import Typestore

from fusion.sample import Frame, Modality, Prediction
from fusion.sensors.ros_messages import audio_messages, cloud_message, image_message
from fusion.sensors.ros_types import (
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
from fusion.sinks import Sink

_MSGTYPE = {Modality.CAMERA: IMAGE, Modality.LIDAR: POINT_CLOUD2, Modality.MICROPHONE: AUDIO_DATA_STAMPED}


class McapWriter:
    """Writes frames as ROS 2 messages to a new MCAP bag folder; `close()` finishes it.

    Messages go to the file as they come (rosbags writes chunk by chunk), so memory stays flat.
    """

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)
        if self.directory.exists():
            raise FileExistsError(
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
            raise ValueError(f"{self.directory}: recording already closed")
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
            raise ValueError(
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


# --------------------------------------------------------------------------- predictions

PREDICTION = "fusion_msgs/msg/Prediction"
# One fused prediction. header.stamp is the fusion tick (the sensors' clock, so the prediction
# sits on the timeline at the instant it describes) and frame_id the rig; `position` is in
# metres in the rig frame, meaningful only when `has_position`.
_PREDICTION_DEF = """\
std_msgs/Header header
uint64 seq
string label
string[] class_names
float32[] probabilities
bool has_position
geometry_msgs/Point position
string[] modalities
string model_version
float64 latency_s
"""


@functools.cache
def prediction_typestore() -> Typestore:
    """ROS 2 humble types plus fusion_msgs/msg/Prediction (a store of its own: the sensor one is shared)."""
    store = get_typestore(Stores.ROS2_HUMBLE)
    store.register(get_types_from_msg(_PREDICTION_DEF, PREDICTION))
    return store


def prediction_topic(rig: str) -> str:
    return sensor_topic(rig, "prediction").replace("/", "/fusion/", 1)


class McapPredictionSink(Sink):
    """Predictions as `fusion_msgs/msg/Prediction` messages in a standalone MCAP file, one topic per
    rig (`/fusion/<rig>/prediction`), log time = header.stamp = the fusion tick.

    Opened beside a recording (Foxglove opens several files as one timeline), the predictions sit
    next to the sensor topics they were made from; the rosbag backend's reader reads them back.
    The definition is embedded, so nothing needs installing to decode them. The file is written
    in a hidden bag folder next to PATH and moved to PATH on `close()`: until then PATH does not
    exist, so a crashed run never leaves a truncated file under the name asked for.
    """

    def __init__(self, path: str | Path, *, class_names: list[str] | None = None) -> None:
        self.path = Path(path)
        if self.path.exists():
            raise FileExistsError(f"{self.path}: already exists (predictions go to a new file)")
        self._folder = self.path.with_name(f".{self.path.name}.bag")
        if self._folder.exists():
            shutil.rmtree(self._folder)  # left by a run that died: it is ours to replace
        self._store = prediction_typestore()
        self._writer = Writer(self._folder, version=9, storage_plugin=StoragePlugin.MCAP)
        self._writer.open()
        self._topics: dict[str, Connection] = {}
        self.class_names = class_names
        self._closed = False

    def write(self, prediction: Prediction) -> None:
        if prediction.error is not None:
            return  # nothing to show: `OrderedSink` counts these, and has left them out already
        ns = to_ns(prediction.timestamp)
        types = self._store.types
        pos = prediction.position
        hdr: Any = header(self._store, RosVersion.ROS2, ns, prediction.rig)
        msg = types[PREDICTION](
            header=hdr,
            seq=prediction.seq,
            label=prediction.label,
            class_names=list(self.class_names or []),
            probabilities=np.asarray(prediction.probs, dtype=np.float32),
            has_position=pos is not None,
            position=types["geometry_msgs/msg/Point"](*(float(v) for v in (pos or (0.0, 0.0, 0.0)))),
            modalities=list(prediction.modalities),
            model_version=prediction.model_version,
            latency_s=float(prediction.latency_s),
        )
        conn = self._topics.get(prediction.rig)
        if conn is None:
            topic = prediction_topic(prediction.rig)
            conn = self._topics[prediction.rig] = self._writer.add_connection(
                topic, PREDICTION, typestore=self._store
            )
        self._writer.write(conn, ns, self._store.serialize_cdr(msg, PREDICTION))

    def close(self) -> None:
        """Finish the file and move it to PATH. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._writer.close()
        os.replace(self._folder / f"{self._folder.name}.mcap", self.path)
        shutil.rmtree(self._folder)
