"""Labels files (`fusion.training.labels`) and the simulated world's ground truth that `fusion record` writes."""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import pytest

from fusion.recording import RecordingReader
from fusion.sim import CLASS_NAMES, World, WorldConfig
from fusion.sim.truth import ground_truth
from fusion.training.labels import (
    LABELS_FILE,
    ClassMap,
    LabelError,
    Labels,
    LabelSegment,
    read_labels,
    write_labels,
)
from fusion_cli.main import main

HEADER = "start,end,label,x,y,z\n"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "labels.csv"
    path.write_text(text)
    return path


def test_reads_segments_with_and_without_position(tmp_path: Path) -> None:
    path = write(tmp_path, HEADER + "0,4,nothing,,,\n\n4.5,5,car,10,-1.5,-0.9\n")
    labels = read_labels(path)
    assert labels.segments == [
        LabelSegment(0.0, 4.0, "nothing", None),
        LabelSegment(4.5, 5.0, "car", (10.0, -1.5, -0.9)),
    ]
    assert labels.at(0.0).label == "nothing"  # type: ignore[union-attr]
    assert labels.at(3.999).label == "nothing"  # type: ignore[union-attr]
    assert labels.at(4.0) is None  # [start, end): the gap after the first segment
    assert labels.at(4.7).position == (10.0, -1.5, -0.9)  # type: ignore[union-attr]
    assert labels.at(5.0) is None and labels.at(-1.0) is None


def test_header_without_position_columns(tmp_path: Path) -> None:
    labels = read_labels(write(tmp_path, "start,end,label\n1,2,person\n"))
    assert labels.segments == [LabelSegment(1.0, 2.0, "person", None)]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("0,2,car,,,\n1,3,car,,,\n", r"labels.csv:3: \[1.0, 3.0\) overlaps line 2 \[0.0, 2.0\)"),
        ("5,6,car,,,\n1,2,car,,,\n", "labels.csv:3: starts at 1.0, before line 2 .*must be sorted"),
        ("0,nan,car,,,\n", "labels.csv:2: end is nan; a finite number is needed"),
        ("0,1,car,1,inf,2\n", "labels.csv:2: y is inf"),
        ("0,1,car,1,,2\n", "labels.csv:2: x, y, z must be all given or all empty"),
        ("0,1,zebra,,,\n", "labels.csv:2: unknown label 'zebra' \\(known: car, nothing\\)"),
        ("1,1,car,,,\n", r"labels.csv:2: end \(1.0\) must be after start \(1.0\)"),
        ("0,one,car,,,\n", "labels.csv:2: end 'one' is not a number"),
        ("0,1,car\n", "labels.csv:2: 3 columns, the header has 6"),
        ("0,1,,,,\n", "labels.csv:2: empty label"),
    ],
)
def test_bad_rows_name_file_and_line(tmp_path: Path, body: str, message: str) -> None:
    with pytest.raises(LabelError, match=message):
        read_labels(write(tmp_path, HEADER + body), classes=["car", "nothing"])


def test_bad_header_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(LabelError, match=r"labels\.csv:1: header must be"):
        read_labels(write(tmp_path, "begin,end,label\n"))
    with pytest.raises(LabelError, match=r"nope\.csv: labels file not found"):
        read_labels(tmp_path / "nope.csv")


def test_write_read_round_trip_is_exact(tmp_path: Path) -> None:
    segments = [
        LabelSegment(0.1 + 0.2, 1 / 3, "car", (math.pi, -1e-9, 1.7e9)),
        LabelSegment(1 / 3, 2.0, "nothing", None),
    ]
    assert read_labels(write_labels(tmp_path / "l.csv", segments)).segments == segments


def test_class_map() -> None:
    m = ClassMap(["none", "person", "vehicle"], "nothing=none, pedestrian=person,car=vehicle")
    assert [m.index(x) for x in ("nothing", "pedestrian", "car", "vehicle")] == [0, 1, 2, 2]
    assert m.known() == {"none", "person", "vehicle", "nothing", "pedestrian", "car"}
    with pytest.raises(KeyError):
        m.index("truck")
    with pytest.raises(ValueError, match="'car=bus' maps to 'bus', not one of none, person, vehicle"):
        ClassMap(["none", "person", "vehicle"], "car=bus")
    with pytest.raises(ValueError, match="'car' is not source=target"):
        ClassMap(["none"], "car")


# --------------------------------------------------------------------------- ground truth


def test_ground_truth_is_the_world_at_every_frame_of_the_grid() -> None:
    world = World(WorldConfig(seed=5, episode_s=2.0))
    segments = ground_truth(world, start=0.0, end=12.0, rate_hz=30.0)
    labels_ = Labels(segments)
    assert segments[0].start == 0.0 and segments[-1].end > 12.0
    for a, b in itertools.pairwise(segments):
        assert a.end == b.start  # contiguous: every instant labelled once
    # A 10 Hz sensor on the 30 Hz grid: its frame times are grid centres, labelled exactly.
    for k in range(121):
        t = k / 10.0
        state = world.state(t)
        seg = labels_.at(t)
        assert seg is not None
        assert (seg.label, seg.position) == (CLASS_NAMES[state.cls], state.center())
    # An episode without an object is one segment (merged with a neighbour that has none
    # either); every other episode's end cuts a segment.
    classes = [world.episode(e).cls for e in range(6)]
    assert 0 in classes and any(c != 0 for c in classes)  # the seed shows both cases
    starts = {s.start for s in segments}
    for e in range(1, 6):
        assert (2.0 * e in starts) == (classes[e - 1] != 0 or classes[e] != 0)
        if classes[e] == 0:
            assert labels_.at(2.0 * e + 1.0) == labels_.at(2.0 * e + 1.99)


RIG_YAML = """\
mode: replay
rigs:
  - id: sim
    sensors:
      cam0:
        modality: camera
        source: {backend: simulated, rate_hz: 30, width: 64, height: 48, duration_s: 2.5, world: {seed: 4}}
      lidar0:
        modality: lidar
        source: {backend: simulated, rate_hz: 10, duration_s: 2.5, world: {seed: 4}}
      mic0:
        modality: microphone
        source: {backend: %(mic)s, rate_hz: 20, duration_s: 2.5, world: {seed: 4}}
"""


def test_record_of_simulated_sensors_writes_their_ground_truth(tmp_path: Path) -> None:
    config = tmp_path / "rig.yaml"
    config.write_text(RIG_YAML % {"mic": "simulated"})
    out = tmp_path / "rec"
    assert main(["record", "--config", str(config), "--out", str(out)]) == 0
    labels = read_labels(out / LABELS_FILE, classes=CLASS_NAMES)
    world = World(WorldConfig(seed=4))
    frames = list(RecordingReader(out).frames())
    assert labels.segments[0].start <= min(f.timestamp for f in frames)
    assert labels.segments[-1].end > max(f.end_time for f in frames)
    for frame in frames:
        if frame.sensor_id != "mic0":
            state = world.state(frame.timestamp)
            seg = labels.at(frame.timestamp)
            assert seg is not None and (seg.label, seg.position) == (CLASS_NAMES[state.cls], state.center())


def test_record_without_one_world_writes_no_labels(tmp_path: Path) -> None:
    config = tmp_path / "rig.yaml"
    config.write_text(
        (RIG_YAML % {"mic": "simulated"}).replace("seed: 4}}\n      mic0", "seed: 5}}\n      mic0")
    )
    out = tmp_path / "rec"
    assert main(["record", "--config", str(config), "--out", str(out)]) == 0
    assert RecordingReader(out).sensors and not (out / LABELS_FILE).exists()
