"""Predictions as ROS 2 messages in a standalone MCAP file (`fusion run --output PATH.mcap`).

`fusion_msgs/msg/Prediction` messages on the sensors' clock, so they line up with a recording
made by `fusion.recording.mcap` (Foxglove opens several files as one timeline).
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
            raise OutputExistsError(f"{self.path}: already exists (predictions go to a new file)")
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
