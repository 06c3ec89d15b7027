"""`fusion run --output PATH.mcap`: predictions as ROS 2 messages, read back from the file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from rosbags.rosbag2.storage_mcap import McapReader

from fusion.sample import Prediction
from fusion.sensors.ros.bagfile import BagFile
from fusion.sinks import open_sink
from fusion.sinks.mcap import PREDICTION, McapPredictionSink, prediction_typestore

NAMES = ["none", "person", "vehicle"]


def prediction(rig: str, seq: int, *, position: list[float] | None, error: str | None = None) -> Prediction:
    return Prediction(
        rig=rig,
        seq=seq,
        timestamp=1796285118.2 + seq / 10,
        label="vehicle",
        probs=[0.1, 0.2, 0.7] if error is None else [],
        position=position,
        modalities=["camera", "lidar"],
        latency_s=0.05,
        model_version="sensor-small@abc",
        error=error,
    )


def test_predictions_read_back_from_the_file(tmp_path: Path) -> None:
    path = tmp_path / "out.mcap"
    sink = open_sink(str(path), class_names=NAMES)
    assert isinstance(sink, McapPredictionSink)
    sink.write(prediction("car", 0, position=[12.5, -1.25, -0.5]))
    sink.write(prediction("car", 1, position=None))
    sink.write(prediction("car", 2, position=None, error="no input"))  # not a message
    sink.write(prediction("robot-2", 0, position=[1.0, 2.0, 3.0]))
    assert not path.exists()  # only once closed
    sink.close()
    sink.close()
    assert path.is_file() and list(tmp_path.iterdir()) == [path]  # the bag folder is gone

    store = prediction_typestore()
    reader = McapReader(path)
    reader.open()
    try:
        topics = {c.topic: c.msgtype for c in reader.connections}
        got = [
            (conn.topic, ns, store.deserialize_cdr(raw, conn.msgtype))
            for conn, ns, raw in reader.messages(connections=reader.connections)
        ]
    finally:
        reader.close()
    assert topics == {"/fusion/car/prediction": PREDICTION, "/fusion/robot_2/prediction": PREDICTION}
    assert len(got) == 3
    by_seq = {(m.header.frame_id, m.seq): (topic, ns, m) for topic, ns, m in got}
    topic, ns, first = by_seq[("car", 0)]
    assert topic == "/fusion/car/prediction"
    expected = prediction("car", 0, position=None)
    assert ns == round(expected.timestamp * 1e9)
    assert (first.header.stamp.sec, first.header.stamp.nanosec) == divmod(ns, 1_000_000_000)
    assert first.label == "vehicle" and first.class_names == NAMES
    np.testing.assert_array_equal(first.probabilities, np.float32([0.1, 0.2, 0.7]))
    assert first.has_position and (first.position.x, first.position.y, first.position.z) == (
        12.5,
        -1.25,
        -0.5,
    )
    assert first.modalities == ["camera", "lidar"] and first.model_version == "sensor-small@abc"
    assert not by_seq[("car", 1)][2].has_position
    # The definition is embedded: the rosbag backend's reader opens the file as any MCAP.
    with BagFile(path) as bag:
        assert bag.topics["/fusion/car/prediction"].count == 2


def test_an_existing_file_is_not_overwritten(tmp_path: Path) -> None:
    path = tmp_path / "out.mcap"
    path.write_bytes(b"keep")
    with pytest.raises(FileExistsError, match=r"out\.mcap: already exists"):
        open_sink(str(path))
    assert path.read_bytes() == b"keep"
