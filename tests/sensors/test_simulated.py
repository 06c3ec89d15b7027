import time

import numpy as np
import pytest

from fusion.sample import Modality
from fusion.sensors import EndOfStream, make_source
from fusion.sensors.simulated import SimCamera, SimCameraConfig, SimMicrophone, SimMicrophoneConfig


def _frames(modality: str, **cfg):
    with make_source(modality, {"backend": "simulated", "duration_s": 1.0, **cfg}) as src:
        return list(src), src


@pytest.mark.parametrize(("modality", "count"), [("camera", 30), ("lidar", 10), ("microphone", 20)])
def test_simulated_sources_are_deterministic_and_finite(modality, count):
    first, src = _frames(modality)
    second, _ = _frames(modality)
    assert len(first) == count == src.stats.frames
    assert all(
        a.timestamp == b.timestamp and np.array_equal(a.data, b.data)
        for a, b in zip(first, second, strict=True)
    )
    assert [f.index for f in first] == list(range(count))
    other, _ = _frames(modality, world={"seed": 5})
    assert any(not np.array_equal(a.data, b.data) for a, b in zip(first, other, strict=True))


def test_audio_chunks_tile_the_timeline_exactly():
    frames, _ = _frames("microphone", rate_hz=30.0, sample_rate=16000)
    starts = [round(f.timestamp * 16000) for f in frames]
    lengths = [len(f.data) for f in frames]
    assert starts[0] == 0 and all(
        s + n == nxt for s, n, nxt in zip(starts, lengths, starts[1:], strict=False)
    )
    assert sum(lengths) == 16000  # one second, no gap or overlap despite 16000 / 30 not being whole
    assert all(f.sample_rate == 16000 and f.modality is Modality.MICROPHONE for f in frames)


def test_realtime_paces_reads_and_times_out():
    src = SimCamera(SimCameraConfig(rate_hz=20.0, realtime=True, width=32, height=24))
    src.open()
    t0 = time.monotonic()
    for _ in range(4):
        src.read()
    assert time.monotonic() - t0 >= 0.14  # frames 0..3 are due at 0, 50, 100, 150 ms
    with pytest.raises(TimeoutError):
        src.read(timeout=0.0)
        src.read(timeout=0.0)


def test_end_of_stream_after_duration():
    src = SimMicrophone(SimMicrophoneConfig(duration_s=0.1))
    src.open()
    assert len([src.read(), src.read()]) == 2
    with pytest.raises(EndOfStream):
        src.read()


def test_unknown_backend_and_bad_keys_name_them():
    with pytest.raises(ValueError, match=r"cam0\.backend: unknown camera backend 'webcam'"):
        make_source("camera", {"backend": "webcam"}, source="cam0")
    with pytest.raises(ValueError, match=r"cam0: rate_hz: Input should be greater than 0"):
        make_source("camera", {"backend": "simulated", "rate_hz": 0}, source="cam0")
