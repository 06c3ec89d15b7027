"""`fusion record --format mcap`: ROS 2 messages in an MCAP bag folder, read back by the rosbag backend."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

from fusion.recording import RecordingReader
from fusion.recording.mcap import McapWriter
from fusion.sample import Frame, Modality
from fusion.sensors import make_source, parse_source
from fusion_cli.main import main
from tests.pipelines.conftest import sim_config


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The simulated rig recorded twice by `fusion record`: as Arrow and as MCAP."""
    tmp = tmp_path_factory.mktemp("rec")
    config = tmp / "sim.yaml"
    config.write_text(yaml.safe_dump(sim_config(realtime=False, duration_s=1.0).model_dump(mode="json")))
    for fmt in ("arrow", "mcap"):
        assert main(["record", "--config", str(config), "--out", str(tmp / fmt), "--format", fmt]) == 0
    return tmp / "arrow", tmp / "mcap"


TOPICS = {"cam0": "/cam0/image_raw", "mic0": "/mic0/audio", "lidar0": "/lidar0/points"}


def test_mcap_recording_reads_back_the_frames_of_the_arrow_one(recorded) -> None:
    arrow, mcap = recorded
    reader = RecordingReader(arrow)
    for sensor, info in reader.sensors.items():
        src = make_source(
            info.modality,
            parse_source(info.modality, {"backend": "rosbag", "path": str(mcap), "topic": TOPICS[sensor]}),
        )
        with src:
            got = list(src)
        want = list(reader.frames(sensor))
        assert len(got) == len(want) == info.frames > 0 and not src.stats.errors
        for g, w in zip(got, want, strict=True):
            assert abs(g.timestamp - w.timestamp) < 1e-9  # stamps hold whole nanoseconds
            assert (g.index, g.sample_rate, g.data.dtype) == (w.index, w.sample_rate, w.data.dtype)
            np.testing.assert_array_equal(g.data, w.data)


def test_inspect_lists_the_recorded_topics(recorded, capsys) -> None:
    _, mcap = recorded
    (file,) = mcap.glob("*.mcap")
    assert main(["inspect", str(mcap), str(file)]) == 0
    out = capsys.readouterr().out
    for path, fmt in ((mcap, "ROS 2 bag"), (file, "MCAP file")):
        block = out.split(f"{path}: ")[1]
        assert f"  format: {fmt}" in block
        assert "  /cam0/image_raw: sensor_msgs/msg/Image, 30 messages, 30.00/s, feeds camera" in block
        assert (
            "  /mic0/audio: audio_common_msgs/msg/AudioDataStamped, 20 messages, 20.00/s, feeds microphone"
            in block
        )
        assert "  /lidar0/points: sensor_msgs/msg/PointCloud2, 10 messages, 10.00/s, feeds lidar" in block


def test_record_refuses_an_existing_folder_before_opening_sensors(recorded, tmp_path, capsys) -> None:
    _, mcap = recorded
    config = tmp_path / "sim.yaml"
    config.write_text(yaml.safe_dump(sim_config(realtime=False, duration_s=1.0).model_dump(mode="json")))
    assert main(["record", "--config", str(config), "--out", str(mcap), "--format", "mcap"]) == 2
    assert capsys.readouterr().err.strip() == f"fusion: error: {mcap}: already holds a recording"


def test_sensor_ids_become_ros_names_and_one_id_keeps_one_modality(tmp_path) -> None:
    frame = Frame(Modality.LIDAR, "front.lidar-1", 1.0, 1.0, np.ones((3, 4), np.float32))
    with McapWriter(tmp_path / "bag") as writer:
        writer.write(frame)
        with pytest.raises(ValueError, match="a camera frame in a lidar stream"):
            writer.write(Frame(Modality.CAMERA, "front.lidar-1", 2.0, 2.0, np.zeros((2, 2, 3), np.uint8)))
    src = make_source(
        Modality.LIDAR,
        parse_source(
            Modality.LIDAR,
            {"backend": "rosbag", "path": str(tmp_path / "bag"), "topic": "/front_lidar_1/points"},
        ),
    )
    with src:
        (got,) = list(src)
    np.testing.assert_array_equal(got.data, frame.data)
    with pytest.raises(FileExistsError):
        McapWriter(tmp_path / "bag")
