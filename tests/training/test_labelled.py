"""`fusion data from-recording`: a labelled sim recording becomes the shards `fusion train` reads."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from fusion.detection.boxes import Box3D
from fusion.sim import CLASS_NAMES, World, WorldConfig
from fusion.sim.truth import object_list
from fusion.training.data import DataConfig, ExampleRenderer, load_split, samples_table
from fusion.training.labels import LABELS_FILE, read_labels, write_labels
from fusion_cli.main import main

SEED, SECONDS = 7, 8.0  # episode 0: a pedestrian, episode 1: nothing
PREPROCESS = {"camera": {"height": 16, "width": 16}, "lidar": {"range_m": 50.0, "max_points": 256}}
RIG_YAML = f"""\
mode: replay
rigs:
  - id: sim
    sensors:
      cam0:
        modality: camera
        source: {{backend: simulated, rate_hz: 10, width: 64, height: 48, duration_s: {SECONDS}, world: {{seed: {SEED}}}}}
      mic0:
        modality: microphone
        source: {{backend: simulated, rate_hz: 20, duration_s: {SECONDS}, world: {{seed: {SEED}}}}}
      lidar0:
        modality: lidar
        source: {{backend: simulated, rate_hz: 10, duration_s: {SECONDS}, world: {{seed: {SEED}}}}}
    sync: {{reference: lidar, slop_s: {{camera: 0.05, lidar: 0.06}}, audio_window_s: 1.0}}
    preprocess:
      camera: {{height: 16, width: 16}}
      lidar: {{range_m: 50.0, max_points: 256}}
"""
THREE = ["none", "person", "vehicle"]
MAP = "nothing=none,pedestrian=person,cyclist=person,car=vehicle,truck=vehicle,emergency_vehicle=vehicle,motorcycle=vehicle"


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    d = tmp_path_factory.mktemp("labelled")
    config = d / "rig.yaml"
    config.write_text(RIG_YAML)
    assert main(["record", "--config", str(config), "--out", str(d / "rec")]) == 0
    return config, d / "rec"


def from_recording(recording: Path, config: Path, out: Path, *extra: str) -> int:
    return main(
        [
            "data", "from-recording", "--recording", str(recording), "--config", str(config),
            "--out", str(out), "--classes", ",".join(THREE), "--map", MAP, *extra,
        ]
    )  # fmt: skip


def test_samples_are_labelled_with_the_world_at_their_tick(
    recorded: tuple[Path, Path], tmp_path: Path
) -> None:
    config, recording = recorded
    assert from_recording(recording, config, tmp_path / "data") == 0
    data = load_split(tmp_path / "data", "train")
    world = World(WorldConfig(seed=SEED))
    three = {"nothing": 0, "pedestrian": 1, "cyclist": 1}
    assert len(data) == round(SECONDS * 10)  # one per LiDAR sweep: every tick is labelled
    for sample in data.samples:
        state = world.state(sample.timestamp)
        assert sample.label == three.get(CLASS_NAMES[state.cls], 2)
        assert sample.target_position == state.center()
        assert sample.stage_times == {}
        # every object of the scene, its class mapped onto the three classes
        want = [
            dataclasses.replace(b, class_name=THREE[three.get(b.class_name, 2)])
            for b in object_list(world, sample.timestamp)
        ]
        assert sample.objects == want
    assert {s.label for s in data.samples} == {0, 1}


def test_shards_have_the_schema_of_generated_data(recorded: tuple[Path, Path], tmp_path: Path) -> None:
    config, recording = recorded
    assert from_recording(recording, config, tmp_path / "data") == 0
    recorded_table = pq.read_table(tmp_path / "data" / "train" / "part-00000.parquet")
    renderer = ExampleRenderer(
        DataConfig(splits={"train": {"seed": 1, "samples": 1}}, preprocess=PREPROCESS), seed=1
    )
    sample, scene = renderer.render(0)
    pq.write_table(samples_table([sample], [scene]), tmp_path / "generated.parquet")  # as a shard is
    generated = pq.read_table(tmp_path / "generated.parquet")
    assert recorded_table.schema.equals(generated.schema, check_metadata=True)


def test_unlabelled_ticks_are_skipped_and_counted(
    recorded: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config, recording = recorded
    truth = read_labels(recording / LABELS_FILE)
    kept = [s for s in truth.segments if s.end <= SECONDS / 2]  # the second half has no labels
    labels = write_labels(tmp_path / "half.csv", kept)
    assert from_recording(recording, config, tmp_path / "data", "--labels", str(labels)) == 0
    expected = sum(1 for k in range(round(SECONDS * 10)) if k / 10 < kept[-1].end)
    assert len(load_split(tmp_path / "data", "train")) == expected
    assert f"skipped {round(SECONDS * 10) - expected} samples: unlabelled" in capsys.readouterr().err


def test_bad_labels_fail_with_one_line_naming_file_and_line(
    recorded: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config, recording = recorded
    bad = tmp_path / "bad.csv"
    bad.write_text("start,end,label\n0,1,nothing\n1,2,zebra\n")
    assert from_recording(recording, config, tmp_path / "data", "--labels", str(bad)) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"fusion: error: {bad}:3: label: unknown class 'zebra'") and "\n" not in err
    # Without --map, the sim's classes are unknown to the 3-class list: the first row says so.
    assert main(["data", "from-recording", "--recording", str(recording), "--out", str(tmp_path / "x"),
                 "--classes", "none,person,vehicle"]) == 2  # fmt: skip
    assert f"{recording / LABELS_FILE}:2: class: unknown class" in capsys.readouterr().err


def test_a_ros_bag_is_labelled_straight_from_the_rigs_sources(
    recorded: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Robot logs are bags: the same session recorded as MCAP, read through a rig of rosbag
    # sources, gives the samples and labels the Arrow recording of it gives.
    import numpy as np
    import yaml

    config, recording = recorded
    bag = tmp_path / "bag"
    assert main(["record", "--config", str(config), "--format", "mcap", "--out", str(bag)]) == 0
    rig = yaml.safe_load(RIG_YAML)
    topics = {"cam0": "/cam0/image_raw", "mic0": "/mic0/audio", "lidar0": "/lidar0/points"}
    for sid, spec in rig["rigs"][0]["sensors"].items():
        spec["source"] = {"backend": "rosbag", "path": str(bag), "topic": topics[sid]}
    bag_config = tmp_path / "bag.yaml"
    bag_config.write_text(yaml.safe_dump(rig))
    labels = str(bag / LABELS_FILE)
    args = [
        "--out",
        str(tmp_path / "from-bag"),
        "--classes",
        ",".join(THREE),
        "--map",
        MAP,
        "--labels",
        labels,
    ]
    assert main(["data", "from-recording", "--config", str(bag_config), *args]) == 0
    assert "samples" in capsys.readouterr().out
    assert from_recording(recording, config, tmp_path / "from-arrow") == 0
    from_bag = load_split(tmp_path / "from-bag", "train").samples
    from_arrow = load_split(tmp_path / "from-arrow", "train").samples
    assert len(from_bag) == len(from_arrow) == round(SECONDS * 10)
    for b, a in zip(from_bag, from_arrow, strict=True):
        assert (b.label, b.target_position, sorted(b.segments)) == (
            a.label,
            a.target_position,
            sorted(a.segments),
        )
        assert b.timestamp == pytest.approx(a.timestamp, abs=1e-9)  # a ROS stamp holds whole ns
        for m in a.segments:
            np.testing.assert_allclose(b.segments[m].values, a.segments[m].values, rtol=1e-6, atol=1e-6)
    # Live devices never end: refused, naming them.
    rig["rigs"][0]["sensors"]["cam0"]["source"] = {"backend": "device", "index": 0}
    bag_config.write_text(yaml.safe_dump(rig))
    assert main(["data", "from-recording", "--config", str(bag_config), "--out", str(tmp_path / "x"),
                 "--labels", labels]) == 2  # fmt: skip
    assert "live devices" in capsys.readouterr().err


def test_a_one_label_file_gives_the_labels_it_gave_before_and_no_objects(
    recorded: tuple[Path, Path], tmp_path: Path
) -> None:
    # The recording's truth rewritten in today's one-label form (object 0's class and position):
    # the same label and position as from the object rows, and no object lists (no sizes).
    config, recording = recorded
    truth = read_labels(recording / LABELS_FILE)
    legacy = tmp_path / "legacy.csv"
    rows = [s for s in truth.segments if s == truth.at(s.start)[0]]  # object 0 of each span
    legacy.write_text(
        "start,end,label,x,y,z\n"
        + "".join(
            f"{s.start!r},{s.end!r},{s.label},{','.join(repr(v) for v in s.position) if s.position else ',,'}\n"
            for s in rows
        )
    )
    assert from_recording(recording, config, tmp_path / "new") == 0
    assert from_recording(recording, config, tmp_path / "old", "--labels", str(legacy)) == 0
    new, old = load_split(tmp_path / "new", "train"), load_split(tmp_path / "old", "train")
    assert [(s.label, s.target_position) for s in old.samples] == [
        (s.label, s.target_position) for s in new.samples
    ]
    assert {s.label for s in old.samples} == {0, 1}
    assert [s.objects for s in old.samples if s.label == 0] == [[] for s in old.samples if s.label == 0]
    assert all(s.objects is None for s in old.samples if s.label != 0)


def test_objects_come_from_a_multi_object_labels_file(recorded: tuple[Path, Path], tmp_path: Path) -> None:
    config, recording = recorded
    labels = tmp_path / "objects.csv"
    labels.write_text(
        "start,end,class,x,y,z,l,w,h,yaw,vx,vy,track_id\n"
        "0,4,car,10,-2,-0.9,4.5,1.9,1.5,0.5,3,0,a\n"
        "0,2,pedestrian,6,1,-0.8,0.6,0.6,1.75,,,,b\n"
        "2,4,cyclist,7,1.5,-0.8,1.8,0.6,1.7,1.0,,,b\n"
        "4,8,nothing,,,,,,,,,,\n"
    )
    assert from_recording(recording, config, tmp_path / "data", "--labels", str(labels)) == 0
    data = load_split(tmp_path / "data", "train")
    car = Box3D(
        class_name="vehicle",
        center=(10, -2, -0.9),
        size=(4.5, 1.9, 1.5),
        yaw=0.5,
        velocity=(3, 0),
        track_id="a",
    )
    walker = Box3D(class_name="person", center=(6, 1, -0.8), size=(0.6, 0.6, 1.75), yaw=0.0, track_id="b")
    rider = Box3D(class_name="person", center=(7, 1.5, -0.8), size=(1.8, 0.6, 1.7), yaw=1.0, track_id="b")
    for s in data.samples:
        t = s.timestamp
        want = [car, walker] if t < 2 else [car, rider] if t < 4 else []
        assert s.objects == want, t
        assert s.label == (2 if t < 4 else 0) and s.target_position == ((10.0, -2.0, -0.9) if t < 4 else None)
    assert len(data) == round(SECONDS * 10)
