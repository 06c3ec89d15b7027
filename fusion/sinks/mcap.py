"""Predictions as ROS 2 messages in a standalone MCAP file (`fusion run --output PATH.mcap`).

Per rig and prediction, on the sensors' clock, so they line up with a recording made by
`fusion.recording.mcap` (Foxglove opens several files as one timeline): the objects as the
standard `vision_msgs/msg/Detection3DArray` and `visualization_msgs/msg/MarkerArray`
(`fusion.sinks.ros_objects`), and the whole prediction as `fusion_msgs/msg/Prediction`.
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

from fusion.errors import OutputExistsError
from fusion.sample import Prediction
from fusion.sensors.ros.types import RosVersion, header, sensor_topic, to_ns
from fusion.sinks.base import Sink
from fusion.sinks.ros_objects import (
    DETECTION_ARRAY,
    MARKER_ARRAY,
    detection_array,
    marker_array,
    register_vision_msgs,
)

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
    """ROS 2 humble types plus fusion_msgs/msg/Prediction and vision_msgs' detection types (a
    store of its own: the sensor one is shared)."""
    store = get_typestore(Stores.ROS2_HUMBLE)
    store.register(get_types_from_msg(_PREDICTION_DEF, PREDICTION))
    register_vision_msgs(store)
    return store


def prediction_topic(rig: str, suffix: str = "prediction") -> str:
    """/fusion/<rig>/<suffix>: `prediction`, `detections` or `markers`."""
    return sensor_topic(rig, suffix).replace("/", "/fusion/", 1)


# Each rig's topics: suffix -> message type.
TOPICS = {"prediction": PREDICTION, "detections": DETECTION_ARRAY, "markers": MARKER_ARRAY}


class McapPredictionSink(Sink):
    """Predictions as ROS 2 messages in a standalone MCAP file, three topics per rig:

    - `/fusion/<rig>/detections`, `vision_msgs/msg/Detection3DArray`: the objects;
    - `/fusion/<rig>/markers`, `visualization_msgs/msg/MarkerArray`: a box and a label each;
    - `/fusion/<rig>/prediction`, `fusion_msgs/msg/Prediction`: label, probabilities, position.

    Every message's log time and header.stamp is the fusion tick; frame_id is the rig (its base
    frame, the one the objects are in). Opened beside a recording, the predictions sit next to
    the sensor topics they were made from; `ros2 bag play` and the rosbag backend's reader read
    them back. The definitions are embedded, so nothing needs installing to decode them. The
    file is written in a hidden bag folder next to PATH and moved to PATH on `close()`: until
    then PATH does not exist, so a crashed run never leaves a truncated file under the name
    asked for.
    """

    def __init__(self, path: str | Path, *, class_names: list[str] | None = None) -> None:
        self.path = Path(path)
        if self.path.exists():
            raise OutputExistsError(f"{self.path}: already exists (predictions go to a new file)")
        self._folder = self.path.with_name(f".{self.path.name}.bag")
        if self._folder.exists():
            shutil.rmtree(self._folder)  # left by a run that died: it is ours to replace
        self._store = prediction_typestore()
        self._writer = Writer(self._folder, version=9, storage_plugin=StoragePlugin.MCAP)
        self._writer.open()
        self._topics: dict[tuple[str, str], Connection] = {}
        self.class_names = class_names
        self._closed = False

    def write(self, prediction: Prediction) -> None:
        if prediction.error is not None:
            return  # nothing to show: `OrderedSink` counts these, and has left them out already
        ns = to_ns(prediction.timestamp)
        hdr: Any = header(self._store, RosVersion.ROS2, ns, prediction.rig)
        messages = {
            "detections": detection_array(self._store, hdr, prediction.objects),
            "markers": marker_array(self._store, hdr, prediction.objects),
            "prediction": self._prediction(hdr, prediction),
        }
        for suffix, msg in messages.items():
            conn = self._connection(prediction.rig, suffix)
            self._writer.write(conn, ns, self._store.serialize_cdr(msg, TOPICS[suffix]))

    def _prediction(self, hdr: Any, prediction: Prediction) -> Any:
        types = self._store.types
        pos = prediction.position
        return types[PREDICTION](
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

    def _connection(self, rig: str, suffix: str) -> Connection:
        conn = self._topics.get((rig, suffix))
        if conn is None:
            conn = self._topics[rig, suffix] = self._writer.add_connection(
                prediction_topic(rig, suffix), TOPICS[suffix], typestore=self._store
            )
        return conn

    def close(self) -> None:
        """Finish the file and move it to PATH. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._writer.close()
        os.replace(self._folder / f"{self._folder.name}.mcap", self.path)
        shutil.rmtree(self._folder)
