"""Labels files (`fusion.training.labels`) and the simulated world's ground truth that `fusion record` writes."""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import pytest

from fusion.detection.boxes import Box3D
from fusion.recording import RecordingReader
from fusion.sim import CLASS_NAMES, World, WorldConfig
from fusion.sim.truth import ground_truth, object_list
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

LEGACY = "start,end,label,x,y,z\n"
HEADER = "start,end,class,x,y,z,l,w,h,yaw,vx,vy,track_id\n"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "labels.csv"
    path.write_text(text)
    return path


def test_reads_one_row_per_object_per_span(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        HEADER
        + "0,4,nothing,,,,,,,,,,\n"
        + "4,6,car,10,-1.5,-0.9,4.5,1.9,1.5,0.25,-3,0.5,7\n"
        + "5,6,pedestrian,8,3,-0.8,0.6,0.6,1.75,,,,9\n\n"
        + "4.5,5,truck,20,0,-0.5,,,,,,,\n",
    )
    labels = read_labels(path)
    car = LabelSegment(4.0, 6.0, "car", (10.0, -1.5, -0.9), (4.5, 1.9, 1.5), 0.25, (-3.0, 0.5), "7")
    walker = LabelSegment(5.0, 6.0, "pedestrian", (8.0, 3.0, -0.8), (0.6, 0.6, 1.75), None, None, "9")
    truck = LabelSegment(4.5, 5.0, "truck", (20.0, 0.0, -0.5))  # no size: no box
    assert labels.segments == [LabelSegment(0.0, 4.0, "nothing"), car, truck, walker]  # by start
    assert labels.at(0.0) == [LabelSegment(0.0, 4.0, "nothing")] and labels.objects(3.9) == []
    assert labels.at(4.0) == [car] and labels.at(4.7) == [car, truck] and labels.at(5.5) == [car, walker]
    assert labels.at(6.0) == [] and labels.objects(6.0) is None and labels.at(-1.0) == []
    assert labels.objects(4.7) is None  # the truck's size is unknown: no object list there
    assert labels.objects(5.5) == [
        Box3D(
            class_name="car",
            center=(10, -1.5, -0.9),
            size=(4.5, 1.9, 1.5),
            yaw=0.25,
            velocity=(-3, 0.5),
            track_id="7",
        ),
        Box3D(class_name="pedestrian", center=(8, 3, -0.8), size=(0.6, 0.6, 1.75), yaw=0.0, track_id="9"),
    ]  # unknown yaw and velocity are 0


def test_columns_are_found_by_name_and_optional_groups_may_be_left_out(tmp_path: Path) -> None:
    labels = read_labels(write(tmp_path, "class,track_id,end,start,z,y,x\ncar,a,2,1,-1,0.5,3\n"))
    assert labels.segments == [LabelSegment(1.0, 2.0, "car", (3.0, 0.5, -1.0), track_id="a")]
    assert labels.objects(1.5) is None  # no size column: centres only


def test_a_one_label_file_reads_as_one_object_per_span(tmp_path: Path) -> None:
    path = write(tmp_path, LEGACY + "0,4,nothing,,,\n\n4.5,5,car,10,-1.5,-0.9\n")
    labels = read_labels(path)
    assert labels.segments == [
        LabelSegment(0.0, 4.0, "nothing", None),
        LabelSegment(4.5, 5.0, "car", (10.0, -1.5, -0.9)),
    ]
    assert labels.at(0.0)[0].label == "nothing" and labels.at(3.999)[0].label == "nothing"
    assert labels.at(4.0) == []  # [start, end): the gap after the first segment
    assert labels.at(4.7)[0].position == (10.0, -1.5, -0.9)
    assert labels.at(5.0) == [] and labels.at(-1.0) == []
    assert labels.objects(1.0) == [] and labels.objects(4.7) is None  # a one-label file has no sizes
    assert read_labels(write(tmp_path, "start,end,label\n1,2,person\n")).segments == [
        LabelSegment(1.0, 2.0, "person", None)
    ]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("0,1,car,1,2,abc,4,2,1.5,0,0,0,\n", r"labels.csv:2: z: not a number \('abc'\)"),
        ("0,1,car,1,2,3,4,2,1.5,abc,0,0,\n", r"labels.csv:2: yaw: not a number \('abc'\)"),
        ("0,1,car,1,2,3,4,2,1.5,nan,0,0,\n", "labels.csv:2: yaw: nan is not a finite number"),
        ("0,nan,car,1,2,3,,,,,,,\n", "labels.csv:2: end: nan is not a finite number"),
        ("0,one,car,1,2,3,,,,,,,\n", r"labels.csv:2: end: not a number \('one'\)"),
        ("x,1,car,1,2,3,,,,,,,\n", r"labels.csv:2: start: not a number \('x'\)"),
        ("0,1,car,1,inf,3,,,,,,,\n", "labels.csv:2: y: inf is not a finite number"),
        ("1,1,car,1,2,3,,,,,,,\n", r"labels.csv:2: end: 1.0 is not after start \(1.0\)"),
        ("0,1,car,1,,3,,,,,,,\n", "labels.csv:2: y: empty; an object needs its centre"),
        ("0,1,car,,,,,,,,,,\n", "labels.csv:2: x: empty; an object needs its centre"),
        ("0,1,car,1,2,3,4,,1.5,,,,\n", "labels.csv:2: w: empty; give all of l, w, h or none"),
        ("0,1,car,1,2,3,4,0,1.5,,,,\n", r"labels.csv:2: w: 0.0 m; a size is > 0"),
        ("0,1,car,1,2,3,,,,,1,,\n", "labels.csv:2: vy: empty; give all of vx, vy or none"),
        ("0,1,zebra,1,2,3,,,,,,,\n", r"labels.csv:2: class: unknown class 'zebra' \(known: car, nothing\)"),
        ("0,1,,1,2,3,,,,,,,\n", "labels.csv:2: class: empty"),
        ("0,1,nothing,1,,,,,,,,,\n", "labels.csv:2: x: a 'nothing' row has no object"),
        ("0,1,car,1,2,3\n", "labels.csv:2: 6 columns, the header has 13"),
        (
            "0,1,car,1,2,3,,,,,,,\n0,2,car,5,2,3,,,,,,,7\n1.5,3,car,5,2,3,,,,,,,7\n",
            r"labels.csv:4: \[1.5, 3.0\) overlaps line 3 \[0.0, 2.0\) of its track",
        ),
        (
            "5,6,car,1,2,3,,,,,,,\n0,5.5,nothing,,,,,,,,,,\n",
            r"labels.csv:3: \[0.0, 5.5\) overlaps line 2 \[5.0, 6.0\) of it",
        ),
    ],
)
def test_bad_rows_name_file_row_and_field(tmp_path: Path, body: str, message: str) -> None:
    with pytest.raises(LabelError, match=message):
        read_labels(write(tmp_path, HEADER + body), classes=["car", "nothing"])


def test_rows_of_different_objects_overlap_and_a_track_may_continue(tmp_path: Path) -> None:
    body = "0,2,car,1,2,3,,,,,,,7\n2,4,car,1.5,2,3,,,,,,,7\n1,3,car,9,2,3,,,,,,,8\n0,1,car,4,4,0,,,,,,,\n"
    labels = read_labels(write(tmp_path, HEADER + body))
    assert [s.track_id for s in labels.at(2.5)] == ["8", "7"]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("0,2,car,,,\n1,3,car,,,\n", r"labels.csv:3: start: \[1.0, 3.0\) overlaps line 2 \[0.0, 2.0\)"),
        ("5,6,car,,,\n1,2,car,,,\n", "labels.csv:3: start: 1.0 is before line 2 .*sorted by start"),
        ("0,nan,car,,,\n", "labels.csv:2: end: nan is not a finite number"),
        ("0,1,car,1,inf,2\n", "labels.csv:2: y: inf is not a finite number"),
        ("0,1,car,1,,2\n", "labels.csv:2: y: empty; give all of x, y, z or none"),
        ("0,1,zebra,,,\n", r"labels.csv:2: label: unknown class 'zebra' \(known: car, nothing\)"),
        ("0,1,car\n", "labels.csv:2: 3 columns, the header has 6"),
        ("0,1,,,,\n", "labels.csv:2: label: empty"),
    ],
)
def test_bad_rows_of_a_one_label_file_name_file_row_and_field(
    tmp_path: Path, body: str, message: str
) -> None:
    with pytest.raises(LabelError, match=message):
        read_labels(write(tmp_path, LEGACY + body), classes=["car", "nothing"])


@pytest.mark.parametrize(
    ("header", "message"),
    [
        ("begin,end,class,x,y,z", "labels.csv:1: header: unknown column 'begin'"),
        ("start,end,class,x,y", "labels.csv:1: header: no column 'z'"),
        ("start,end,class,x,y,z,l,w", "labels.csv:1: header: columns l, w, h come together, got l, w"),
        ("start,end,class,x,y,z,yaw,yaw", "labels.csv:1: header: repeated column 'yaw'"),
        ("start,end,label,x", "labels.csv:1: header: unknown column 'label'"),
    ],
)
def test_bad_header_names_the_column(tmp_path: Path, header: str, message: str) -> None:
    with pytest.raises(LabelError, match=message):
        read_labels(write(tmp_path, header + "\n"))


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(LabelError, match=r"nope\.csv: labels file not found"):
        read_labels(tmp_path / "nope.csv")


def test_write_read_round_trip_is_exact(tmp_path: Path) -> None:
    segments = [
        LabelSegment(
            0.1 + 0.2, 1 / 3, "car", (math.pi, -1e-9, 1.7e9), (4.4, 1 / 3, 1.5), -math.pi, (1e-12, 2 / 3), "7"
        ),
        LabelSegment(0.1 + 0.2, 1 / 3, "truck", (1.0, 2.0, 3.0)),
        LabelSegment(1 / 3, 2.0, "nothing", None),
    ]
    assert read_labels(write_labels(tmp_path / "l.csv", segments)).segments == segments


def test_labels_built_in_code_refuse_one_track_in_two_places() -> None:
    with pytest.raises(LabelError, match="overlaps"):
        Labels(
            [
                LabelSegment(0, 2, "car", (1, 2, 3), track_id="a"),
                LabelSegment(1, 3, "car", (4, 2, 3), track_id="a"),
            ]
        )


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


@pytest.mark.parametrize("max_objects", [1, 4])
def test_ground_truth_is_the_world_at_every_frame_of_the_grid(max_objects: int) -> None:
    world = World(WorldConfig(seed=5, episode_s=2.0, max_objects=max_objects))
    segments = ground_truth(world, start=0.0, end=12.0, rate_hz=30.0)
    labels_ = Labels(segments)
    assert segments[0].start == 0.0 and segments[-1].end > 12.0
    spans = sorted({(s.start, s.end) for s in segments})
    for a, b in itertools.pairwise(spans):
        assert a[1] == b[0]  # contiguous: every instant labelled once, all of a piece's rows alike
    # A 10 Hz sensor on the 30 Hz grid: its frame times are grid centres, labelled exactly.
    for k in range(121):
        t = k / 10.0
        state = world.state(t)
        rows = labels_.at(t)
        assert (rows[0].label, rows[0].position) == (CLASS_NAMES[state.cls], state.center())  # object 0
        assert labels_.objects(t) == object_list(world, t)
    if max_objects > 1:
        assert max(len(labels_.at(k / 10.0)) for k in range(121)) >= 2
        return
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
            rows = labels.at(frame.timestamp)
            assert (rows[0].label, rows[0].position) == (CLASS_NAMES[state.cls], state.center())
            assert labels.objects(frame.timestamp) == object_list(world, frame.timestamp)


def test_record_without_one_world_writes_no_labels(tmp_path: Path) -> None:
    config = tmp_path / "rig.yaml"
    config.write_text(
        (RIG_YAML % {"mic": "simulated"}).replace("seed: 4}}\n      mic0", "seed: 5}}\n      mic0")
    )
    out = tmp_path / "rec"
    assert main(["record", "--config", str(config), "--out", str(out)]) == 0
    assert RecordingReader(out).sensors and not (out / LABELS_FILE).exists()
