import hashlib
import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from fusion.config import parse_config
from fusion.errors import ConfigError
from fusion.sample import Modality
from fusion.sensors import make_preprocessor, make_source, parse_source
from fusion.sim.truth import object_list
from fusion.sim.world import frame_rng
from fusion.training.data import (
    DataConfig,
    ExampleRenderer,
    generate,
    load_split,
    read_manifest,
    samples_table,
    split_world,
)
from fusion.training.train import load_train_config

# Small sensors and grids so a shard renders in a fraction of a second.
SMALL = {
    "world": {"episode_s": 3.0},
    "splits": {"train": {"seed": 11, "samples": 10}, "test": {"seed": 12, "samples": 4}},
    "shard_size": 4,
    "sensors": {
        "camera": {"width": 64, "height": 48},
        "lidar": {"beams": 16, "azimuth_steps": 360},
        "microphone": {"sample_rate": 16000, "window_s": 1.0},
    },
    "preprocess": {
        "camera": {"height": 16, "width": 16},
        "microphone": {"sample_rate": 16000, "n_mels": 8},
        "lidar": {"range_m": 50.0, "max_points": 64},
    },
}


def small_config(**changes) -> DataConfig:
    return parse_config(DataConfig, {**SMALL, **changes})


def _equal_samples(a, b):
    assert [s.label for s in a] == [s.label for s in b]
    assert [s.target_position for s in a] == [s.target_position for s in b]
    for x, y in zip(a, b, strict=True):
        assert x.segments.keys() == y.segments.keys()
        for m in x.segments:
            assert np.array_equal(x.segments[m].values, y.segments[m].values)


def test_generate_writes_labelled_shards_that_read_back(tmp_path):
    report = generate(small_config(), tmp_path, workers=1, progress=False)
    assert report.samples == 14 and report.skipped == 0
    assert sorted(p.name for p in (tmp_path / "train").iterdir()) == [
        "part-00000.parquet",
        "part-00001.parquet",
        "part-00002.parquet",
    ]
    train = load_split(tmp_path, "train")
    assert len(train) == 10 and [s.seq for s in train.samples] == list(range(10))
    for s in train.samples:
        assert 0 <= s.label < 7
        assert (s.target_position is None) == (s.label == 0)  # 'nothing' has no position
        assert s.segments[Modality.CAMERA].grid == (16, 16)
        assert s.segments[Modality.MICROPHONE].grid == (32, 8)
        assert s.segments[Modality.LIDAR].num_rows <= 64
    scene = train.scene
    assert set(scene["weather"]) <= {"clear", "fog", "rain"}
    assert np.array_equal(np.isnan(scene["distance_m"]), train.labels == 0)
    assert np.array_equal(np.isnan(scene["snr_db"]), train.labels == 0)
    manifest = read_manifest(tmp_path)
    assert manifest["splits"] == {"train": 10, "test": 4} and manifest["runs"][-1]["rendered"] == 14


def test_samples_are_what_the_live_preprocessors_make_of_the_frames():
    config = small_config()
    renderer = ExampleRenderer(config, seed=11)
    sample, _ = renderer.render(3)
    frames, _ = renderer.frames(3, renderer.instant(3))
    assert sample.timestamp == renderer.instant(3)
    for frame in frames:
        pre = make_preprocessor(frame.modality, config.preprocess.for_modality(frame.modality))
        assert np.array_equal(pre(frame).values, sample.segments[frame.modality].values)
    # The audio window ends at the sample's instant and lies inside the episode.
    mic = next(f for f in frames if f.modality is Modality.MICROPHONE)
    assert mic.end_time == pytest.approx(sample.timestamp, abs=1 / 16000)
    assert mic.timestamp >= 3 * config.world.episode_s


def test_generation_is_deterministic_and_splits_differ(tmp_path):
    generate(small_config(), tmp_path / "a", workers=1, progress=False)
    generate(small_config(), tmp_path / "b", workers=2, progress=False)  # two processes, same data
    a, b = load_split(tmp_path / "a", "train"), load_split(tmp_path / "b", "train")
    _equal_samples(a.samples, b.samples)
    test = load_split(tmp_path / "a", "test")
    assert not np.array_equal(
        a.samples[0].segments[Modality.CAMERA].values, test.samples[0].segments[Modality.CAMERA].values
    )


def test_an_interrupted_run_renders_only_the_missing_shards(tmp_path):
    generate(small_config(), tmp_path, workers=1, progress=False)
    first = pq.read_table(tmp_path / "train" / "part-00001.parquet")
    (tmp_path / "train" / "part-00001.parquet").unlink()
    (tmp_path / "train" / "part-00002.parquet.tmp").write_bytes(b"half a shard")  # a crash mid-write
    report = generate(small_config(), tmp_path, workers=1, progress=False)
    assert report.samples == 4 and report.skipped == 10
    assert pq.read_table(tmp_path / "train" / "part-00001.parquet").equals(first)
    assert len(json.loads((tmp_path / "manifest.json").read_text())["runs"]) == 2


def test_bad_data_configs_name_the_problem(tmp_path):
    with pytest.raises(ConfigError, match="splits must use different seeds, got train=1, test=1"):
        small_config(splits={"train": {"seed": 1, "samples": 2}, "test": {"seed": 1, "samples": 2}})
    with pytest.raises(ConfigError, match=r"world.seed \(3\): give each split its own seed"):
        small_config(world={"seed": 3})
    with pytest.raises(ConfigError, match=r"window_s \(1.0\) must be shorter than world.episode_s \(1.0\)"):
        small_config(world={"episode_s": 1.0})
    # A typo in the preprocessing fails when the config loads, naming the key (not at rendering).
    with pytest.raises(ConfigError, match=r"preprocess\.camera\.hieght: Extra inputs are not permitted"):
        small_config(preprocess={"camera": {"hieght": 3}})
    with pytest.raises(FileNotFoundError, match="no shards of split 'val'"):
        load_split(tmp_path, "val")


def test_a_split_can_render_a_shifted_world(tmp_path):
    splits = {
        "train": {"seed": 11, "samples": 6},
        "shifted": {
            "seed": 13,
            "samples": 6,
            "world": {"night_probability": 1.0, "fog_probability": 1.0, "rain_probability": 0.0},
        },
    }
    generate(small_config(splits=splits), tmp_path, workers=1, progress=False)
    shifted, train = load_split(tmp_path, "shifted").scene, load_split(tmp_path, "train").scene
    assert all(shifted["night"]) and set(shifted["weather"]) == {"fog"}
    assert not all(train["night"])  # the base world is untouched
    assert read_manifest(tmp_path)["config"]["splits"]["shifted"]["world"]["night_probability"] == 1.0


def test_a_bad_split_world_names_its_key_path():
    bad = {"train": {"seed": 1, "samples": 2, "world": {"night_probabilty": 0.5}}}
    with pytest.raises(ConfigError, match=r"splits.train.world.night_probabilty: Extra inputs"):
        small_config(splits=bad)
    bad = {"train": {"seed": 1, "samples": 2, "world": {"fog_probability": 0.7, "rain_probability": 0.7}}}
    with pytest.raises(ConfigError, match=r"splits.train.world.*fog_probability \+ rain_probability"):
        small_config(splits=bad)


def test_a_training_example_sees_what_the_live_simulated_sensors_see():
    """The training data renders through the live rig's simulated sensors, with their configs:
    frame 0 of a simulated source started at an example's instant is that example's frame."""
    config = small_config()
    renderer = ExampleRenderer(config, seed=11)
    t = renderer.instant(0)
    frames, _ = renderer.frames(0, t)
    trained = {f.modality: f for f in frames}
    world = renderer.world_config.model_dump()
    for modality, sensor in (
        (Modality.CAMERA, config.sensors.camera),
        (Modality.LIDAR, config.sensors.lidar),
    ):
        live = make_source(
            modality,
            parse_source(
                modality, {"backend": "simulated", "world": world, "start_s": t, **sensor.model_dump()}
            ),
        )
        with live:
            frame = live.read()
        assert frame.timestamp == t
        assert np.array_equal(frame.data, trained[Modality(modality)].data), modality


def test_every_sample_carries_the_object_list_at_its_instant(tmp_path):
    config = small_config(world={"episode_s": 3.0, "max_objects": 4})
    renderer = ExampleRenderer(config, seed=11, world=split_world(config, "train"))
    counts = []
    for i in range(10):
        sample, _ = renderer.render(i)
        assert sample.objects == object_list(renderer.world, sample.timestamp)
        assert all(b.score is None and b.track_id is not None for b in sample.objects)
        # the one-label fields stay those of object 0
        state = renderer.world.state(sample.timestamp)
        assert sample.label == state.cls and sample.target_position == state.center()
        counts.append(len(sample.objects))
    assert max(counts) >= 2 and min(counts) <= 1
    generate(config, tmp_path, workers=1, progress=False)
    read = load_split(tmp_path, "train")
    assert [s.objects for s in read.samples] == [renderer.render(i)[0].objects for i in range(10)]


def test_the_sensors_render_every_object_that_the_labels_list():
    from fusion.sim.lidar import scan_lidar, scan_lidar_scene

    config = small_config(world={"episode_s": 3.0, "max_objects": 4})
    renderer = ExampleRenderer(config, seed=11, world=split_world(config, "train"))
    crowded = 0
    for i in range(10):
        t = renderer.instant(i)
        frames, _ = renderer.frames(i, t)
        sweep = next(f.data for f in frames if f.modality is Modality.LIDAR)
        rng = frame_rng(renderer.seed, renderer.lidar.stream, i)
        scene = renderer.world.scene(t)
        points = scan_lidar_scene(scene, renderer.lidar.rays, height=1.7, rng=rng).points
        assert np.array_equal(sweep, points)
        if len(scene.objects) >= 2:
            alone = scan_lidar(
                renderer.world.state(t), renderer.lidar.rays, height=1.7, rng=frame_rng(renderer.seed, 2, i)
            )
            crowded += not np.array_equal(sweep, alone)
    assert crowded >= 1


# Every column but `objects` of the first 3 samples of each split of sensor-small, schema
# metadata left out (its version changed): computed before the object lists were added.
PINNED_SENSOR_SMALL = "5b60fdfc57631bfbf709d55406c305552fad7ba69b267b39008889f186735a6a"


def test_the_shipped_configs_data_is_unchanged_by_the_object_lists():
    cfg = load_train_config("configs/train/sensor-small.yaml").data
    total = hashlib.sha256()
    for name, split in cfg.splits.items():
        renderer = ExampleRenderer(cfg, seed=split.seed, world=split_world(cfg, name))
        rendered = [renderer.render(i) for i in range(3)]
        table = samples_table([s for s, _ in rendered], [c for _, c in rendered])
        table = table.drop_columns(["objects"]).replace_schema_metadata(None)
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, table.schema) as writer:
            writer.write_table(table)
        total.update(hashlib.sha256(sink.getvalue().to_pybytes()).hexdigest().encode())
        assert all(len(s.objects) <= 1 for s, _ in rendered)  # max_objects 1
    assert total.hexdigest() == PINNED_SENSOR_SMALL
