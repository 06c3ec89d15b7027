"""`fusion run --output PATH.mcap`: predictions as ROS 2 messages, read back from the file."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from mcap.reader import make_reader
from mcap_ros2.decoder import DecoderFactory
from rosbags.rosbag2.storage_mcap import McapReader

from fusion.detection.boxes import Box3D
from fusion.sample import Prediction
from fusion.sensors.ros.bagfile import BagFile
from fusion.sinks import open_sink
from fusion.sinks.mcap import PREDICTION, McapPredictionSink, prediction_typestore
from fusion.sinks.ros_objects import DETECTION_ARRAY, MARKER_ARRAY, class_color

NAMES = ["none", "person", "vehicle"]
CAR = Box3D(class_name="car", score=0.875, center=(12.5, -1.25, 0.75), size=(4.5, 1.75, 1.5), yaw=math.pi / 3)
WALKER = Box3D(
    class_name="pedestrian",
    score=0.5,
    center=(4.0, 2.0, 0.875),
    size=(0.5, 0.625, 1.75),
    yaw=-0.5,
    track_id="7",
)


def prediction(
    rig: str,
    seq: int,
    *,
    position: list[float] | None,
    error: str | None = None,
    objects: list[Box3D] | None = None,
) -> Prediction:
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
        objects=objects or [],
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
    assert {t: m for t, m in topics.items() if t.endswith("/prediction")} == {
        "/fusion/car/prediction": PREDICTION,
        "/fusion/robot_2/prediction": PREDICTION,
    }
    got = [(topic, ns, m) for topic, ns, m in got if topic.endswith("/prediction")]
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


def write_objects(path: Path) -> list[Prediction]:
    """Three ticks of rig `car`: two objects, none, one (stale boxes must vanish)."""
    preds = [
        prediction("car", 0, position=[12.5, -1.25, 0.75], objects=[CAR, WALKER]),
        prediction("car", 1, position=None),
        prediction("car", 2, position=[4.0, 2.0, 0.875], objects=[WALKER]),
    ]
    sink = McapPredictionSink(path, class_names=NAMES)
    for p in preds:
        sink.write(p)
    sink.close()
    return preds


def decoded_messages(path: Path) -> list[tuple[str, str, int, object]]:
    """(topic, schema name, log time, message) of every message, decoded by the `mcap` reader from
    the definitions embedded in the file (as Foxglove decodes them: no typestore of ours)."""
    with path.open("rb") as f:
        reader = make_reader(f, decoder_factories=[DecoderFactory()])
        return [
            (channel.topic, schema.name, message.log_time, decoded)
            for schema, channel, message, decoded in reader.iter_decoded_messages()
        ]


def test_every_message_decodes_from_the_embedded_definitions(tmp_path: Path) -> None:
    path = tmp_path / "objects.mcap"
    preds = write_objects(path)
    got = decoded_messages(path)
    assert len(got) == 3 * len(preds)  # nothing left undecoded
    schemas = {topic: schema for topic, schema, _, _ in got}
    assert schemas == {
        "/fusion/car/detections": DETECTION_ARRAY,
        "/fusion/car/markers": MARKER_ARRAY,
        "/fusion/car/prediction": PREDICTION,
    }
    for topic, _, log_time, msg in got:
        # header.stamp is the log time (a MarkerArray has no header: its markers have one each)
        headers = [m.header for m in msg.markers] if topic.endswith("/markers") else [msg.header]
        for hdr in headers:
            assert hdr.stamp.sec * 1_000_000_000 + hdr.stamp.nanosec == log_time, topic
            assert hdr.frame_id == "car"
    ticks = [round(p.timestamp * 1e9) for p in preds]  # the fusion ticks, on the sensors' clock
    for suffix in ("detections", "markers", "prediction"):
        assert [t for topic, _, t, _ in got if topic == f"/fusion/car/{suffix}"] == ticks


def _by_topic(got: list[tuple[str, str, int, object]], suffix: str) -> list:
    return [msg for topic, _, _, msg in got if topic == f"/fusion/car/{suffix}"]


def test_detections_carry_class_score_and_box(tmp_path: Path) -> None:
    path = tmp_path / "objects.mcap"
    write_objects(path)
    first, empty, last = _by_topic(decoded_messages(path), "detections")
    assert len(first.detections) == 2 and empty.detections == [] and len(last.detections) == 1
    for det, box in zip(first.detections, [CAR, WALKER], strict=True):
        assert det.header.frame_id == "car"
        (result,) = det.results
        assert result.hypothesis.class_id == box.class_name and result.hypothesis.score == box.score
        centre, size = det.bbox.center, det.bbox.size
        assert (centre.position.x, centre.position.y, centre.position.z) == box.center
        assert (size.x, size.y, size.z) == box.size
        q = centre.orientation
        assert (q.x, q.y) == (0.0, 0.0) and math.isclose(2 * math.atan2(q.z, q.w), box.yaw)
        assert result.pose.pose.position.x == box.center[0]
        assert det.id == (box.track_id or "")


def test_markers_draw_a_box_and_a_label_per_object_after_clearing(tmp_path: Path) -> None:
    path = tmp_path / "objects.mcap"
    write_objects(path)
    first, empty, last = _by_topic(decoded_messages(path), "markers")
    deleteall, cube, text_marker = 3, 1, 9  # visualization_msgs/Marker constants
    for arr, count in ((first, 2), (empty, 0), (last, 1)):
        assert arr.markers[0].action == deleteall  # stale boxes vanish every tick
        assert len(arr.markers) == 1 + 2 * count
    boxes = [m for m in first.markers[1:] if m.type == cube]
    texts = [m for m in first.markers[1:] if m.type == text_marker]
    assert [(m.ns, m.id) for m in boxes] == [("boxes", 0), ("boxes", 1)]
    assert [(m.ns, m.id) for m in texts] == [("labels", 0), ("labels", 1)]
    assert [m.text for m in texts] == ["car 0.88", "pedestrian 0.50"]
    car_box = boxes[0]
    assert (car_box.scale.x, car_box.scale.y, car_box.scale.z) == CAR.size
    assert (car_box.pose.position.x, car_box.pose.position.y) == CAR.center[:2]
    assert (car_box.color.r, car_box.color.g, car_box.color.b) == pytest.approx(class_color("car"))
    assert car_box.header.frame_id == "car" and car_box.action == 0
    assert texts[0].pose.position.z == pytest.approx(CAR.center[2] + CAR.size[2] / 2 + 0.5)
    # The walker is object 0 in the last tick: the same ids again, so viewers replace, not pile up.
    assert [(m.ns, m.id, m.text) for m in last.markers[1:] if m.type == text_marker] == [
        ("labels", 0, "pedestrian 0.50")
    ]


def test_an_existing_file_is_not_overwritten(tmp_path: Path) -> None:
    path = tmp_path / "out.mcap"
    path.write_bytes(b"keep")
    with pytest.raises(FileExistsError, match=r"out\.mcap: already exists"):
        open_sink(str(path))
    assert path.read_bytes() == b"keep"
