"""The plain Fuser behind the FuserActor: warm-up before the first tick, and the one `fuse` it
shares with training-data generation."""

from dataclasses import replace

import numpy as np
import pytest

from fusion.config import parse_config
from fusion.fuser import Fuser, PreprocessConfig
from fusion.sample import Modality
from fusion.schema import samples_to_table
from fusion.sensors import make_source, parse_source
from fusion.training.data import ExampleRenderer
from tests.training.test_data import SMALL, small_config

SENSORS = {"cam0": Modality.CAMERA, "mic0": Modality.MICROPHONE, "lidar0": Modality.LIDAR}
RATES = {"cam0": 30, "mic0": 20, "lidar0": 10}


def _frames():
    frames = []
    for sid, m in SENSORS.items():
        extra = {"width": 64, "height": 48} if m is Modality.CAMERA else {}
        cfg = {"backend": "simulated", "sensor_id": sid, "rate_hz": RATES[sid], "duration_s": 1.0, **extra}
        with make_source(m, parse_source(m, cfg)) as src:
            frames += list(src)
    return sorted(frames, key=lambda f: f.timestamp)


def _fuser():
    return Fuser(
        rig="r",
        sensors=SENSORS,
        preprocess=parse_config(PreprocessConfig, {"camera": {"height": 16, "width": 16}}),
        lossless=True,
    )


def test_warm_up_runs_every_preprocessor_once_and_changes_nothing():
    warmed, cold = _fuser(), _fuser()
    calls = []
    for m, p in list(warmed.preprocessors.items()):
        warmed.preprocessors[m] = lambda frame, m=m, p=p: (calls.append((m, frame.sensor_id)), p(frame))[1]
    warmed.warm_up()
    assert sorted(calls, key=str) == sorted(((m, "warm-up") for m in SENSORS.values()), key=str)
    assert warmed.samples == 0 and not warmed.sync.stats.received and not warmed.input_errors

    frames = _frames()
    a = warmed.push(frames) + warmed.finish()
    b = cold.push(frames) + cold.finish()
    assert len(a) == len(b) == 10
    for x, y in zip(a, b, strict=True):
        assert (x.seq, x.timestamp, sorted(x.segments)) == (y.seq, y.timestamp, sorted(y.segments))
        for m in x.segments:
            assert np.array_equal(x.segments[m].values, y.segments[m].values)


# A LiDAR crop box above every return: the sweep preprocesses to nothing, so both paths must
# leave the modality out and count the error.
NO_LIDAR_POINTS = {**SMALL["preprocess"], "lidar": {"range_m": 50.0, "z_min": 50.0, "z_max": 60.0}}


@pytest.mark.parametrize("preprocess", [SMALL["preprocess"], NO_LIDAR_POINTS], ids=["all", "lidar-rejected"])
def test_a_training_example_is_the_sample_the_pipeline_fuses_from_its_frames(preprocess):
    config = small_config(preprocess=preprocess)
    renderer = ExampleRenderer(config, seed=11)
    for index in (0, 3):
        trained, _ = renderer.render(index)
        frames, _ = renderer.frames(index, renderer.instant(index))
        fuser = Fuser(
            rig=trained.rig,
            sensors={f.sensor_id: f.modality for f in frames},
            preprocess=config.preprocess,
            lossless=True,
        )
        (fused,) = fuser.push(sorted(frames, key=lambda f: f.timestamp)) + fuser.finish()
        # The pipeline traces latency by the wall clock; generated data has no trace.
        assert list(fused.stage_times) == [
            "aligned",
            "capture.camera",
            "capture.lidar",
            "capture.microphone",
            "fused",
        ]
        assert trained.stage_times == {}
        # Sequence numbers count ticks in the pipeline and examples in a split; labels and
        # object lists come from the world.
        fused = replace(
            fused,
            seq=trained.seq,
            stage_times={},
            label=trained.label,
            target_position=trained.target_position,
            objects=trained.objects,
        )
        assert samples_to_table([fused]).equals(samples_to_table([trained]))
    rejected = preprocess is NO_LIDAR_POINTS
    assert (Modality.LIDAR in trained.segments) is not rejected
    assert fuser.input_errors[(Modality.LIDAR, "preprocess")] == rejected
    assert list(renderer.errors.values()) == ([2] if rejected else [])
