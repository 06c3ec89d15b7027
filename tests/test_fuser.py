"""The plain Fuser behind the FuserActor: warm-up before the first tick."""

import numpy as np

from fusion.fuser import Fuser
from fusion.sample import Modality
from fusion.sensors import make_source

SENSORS = {"cam0": Modality.CAMERA, "mic0": Modality.MICROPHONE, "lidar0": Modality.LIDAR}
RATES = {"cam0": 30, "mic0": 20, "lidar0": 10}


def _frames():
    frames = []
    for sid, m in SENSORS.items():
        extra = {"width": 64, "height": 48} if m is Modality.CAMERA else {}
        cfg = {"backend": "simulated", "sensor_id": sid, "rate_hz": RATES[sid], "duration_s": 1.0, **extra}
        with make_source(m, cfg) as src:
            frames += list(src)
    return sorted(frames, key=lambda f: f.timestamp)


def _fuser():
    return Fuser(
        rig="r", sensors=SENSORS, preprocess={Modality.CAMERA: {"height": 16, "width": 16}}, lossless=True
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
