import os
import threading
import time

import numpy as np
import pytest

from fusion.sample import Modality
from fusion.sensors import EndOfStream, make_source, parse_source
from fusion.sensors.simulated import CameraSim, SimulatedSource
from fusion.sensors.simulated_config import SimCameraConfig, SimMicrophoneConfig


def _frames(name: str, **cfg):
    modality = Modality(name)
    with make_source(
        modality, parse_source(modality, {"backend": "simulated", "duration_s": 1.0, **cfg})
    ) as src:
        return list(src), src


@pytest.mark.parametrize(("modality", "count"), [("camera", 30), ("lidar", 10), ("microphone", 20)])
def test_simulated_sources_are_deterministic_and_finite(modality, count):
    small = {"width": 160, "height": 120} if modality == "camera" else {}
    first, src = _frames(modality, **small)
    second, _ = _frames(modality, **small)
    assert len(first) == count == src.stats.frames
    assert all(
        a.timestamp == b.timestamp and np.array_equal(a.data, b.data)
        for a, b in zip(first, second, strict=True)
    )
    assert [f.index for f in first] == list(range(count))
    other, _ = _frames(modality, world={"seed": 5}, **small)
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
    src = SimulatedSource(SimCameraConfig(rate_hz=20.0, realtime=True, width=32, height=24))
    src.open()
    t0 = time.monotonic()
    for _ in range(4):
        src.read()
    assert time.monotonic() - t0 >= 0.14  # frames 0..3 are due at 0, 50, 100, 150 ms
    with pytest.raises(TimeoutError):
        src.read(timeout=0.0)
        src.read(timeout=0.0)


def test_realtime_microphone_hands_a_chunk_over_after_its_last_sample():
    """A sound card delivers a chunk once it is recorded: never audio from the future."""
    src = SimulatedSource(SimMicrophoneConfig(rate_hz=20.0, realtime=True))
    src.open()
    for _ in range(3):
        chunk = src.read()
        end = chunk.timestamp + len(chunk.data) / chunk.sample_rate
        assert time.time() >= end - 1e-3, "chunk handed over before its last sample was captured"


def test_realtime_frame_is_rendered_once_across_timed_out_reads(monkeypatch):
    """The frame is rendered ahead of its due time and kept, so a read that times out costs no
    second rendering, and the frame finally handed over is the one rendered then."""
    src = SimulatedSource(SimCameraConfig(rate_hz=1.0, realtime=True, width=32, height=24))
    renders = []
    real = CameraSim.render

    def counting(self, start, end, rng):
        renders.append(start)
        return real(self, start, end, rng)

    monkeypatch.setattr(CameraSim, "render", counting)
    src.open()
    rendered_while_waiting = []
    while True:
        try:
            frame = src.read(timeout=0.001)
            break
        except TimeoutError:
            rendered_while_waiting.append(len(renders))
    assert 1 in rendered_while_waiting  # ready while reads still waited for it
    assert renders == [frame.timestamp]  # and rendered once, however many reads timed out
    assert time.time() >= frame.timestamp  # not handed over before it is due


def test_end_of_stream_after_duration():
    src = SimulatedSource(SimMicrophoneConfig(duration_s=0.1))
    src.open()
    assert len([src.read(), src.read()]) == 2
    with pytest.raises(EndOfStream):
        src.read()


def test_unknown_backend_and_bad_keys_name_them():
    with pytest.raises(ValueError, match=r"cam0\.backend: unknown camera backend 'webcam'"):
        parse_source(Modality.CAMERA, {"backend": "webcam"}, source="cam0")
    with pytest.raises(ValueError, match=r"cam0: rate_hz: Input should be greater than 0"):
        parse_source(Modality.CAMERA, {"backend": "simulated", "rate_hz": 0}, source="cam0")


def test_live_microphone_hears_what_the_training_windows_hear():
    """The 50 ms chunks of the live source, joined, are the samples a training example uses."""
    from fusion.sim.audio import AudioSynth
    from fusion.sim.world import World, WorldConfig

    frames, _ = _frames("microphone", world={"seed": 7}, start_s=2.0)
    live = np.concatenate([f.data for f in frames])
    window = AudioSynth(World(WorldConfig(seed=7)), sample_rate=16000)(2 * 16000, 16000)
    assert np.array_equal(live, window)


def test_simulated_lidar_sees_the_world_object():
    from fusion.sim.world import World, WorldConfig

    frames, _ = _frames("lidar", world={"seed": 3}, rate_hz=1.0, duration_s=40.0)
    world = World(WorldConfig(seed=3))
    # Every sweep of an episode with an object holds returns inside the object's (slightly
    # inflated) box, in the object's own frame; sweeps of empty episodes hold none there.
    hits, has_object = [], []
    for f in frames:
        state = world.state(f.timestamp)
        has_object.append(state.model is not None)
        if state.model is None:
            continue
        local = (f.data[:, :3] - np.asarray(state.position)) @ state.rotation
        lo, hi = state.model.bounds
        inside = np.all((local > np.asarray(lo) - 0.2) & (local < np.asarray(hi) + 0.2), axis=1)
        above_ground = local[:, 2] > 0.1
        hits.append(int((inside & above_ground).sum()))
    assert 0 < sum(has_object) < len(frames)
    assert all(n > 0 for n in hits), hits
    # Empty episodes: nothing stands above the ground beyond the rain drops' reach (7 m).
    empty = [f for f, o in zip(frames, has_object, strict=True) if not o]
    assert all(not ((f.data[:, 2] > -1.2) & (np.linalg.norm(f.data[:, :3], axis=1) > 7)).any() for f in empty)


def test_a_reader_that_falls_behind_loses_the_oldest_frames_as_a_device_would():
    src = SimulatedSource(SimCameraConfig(rate_hz=50.0, realtime=True, width=32, height=24, buffer_s=0.06))
    src.open()
    first = src.read()
    time.sleep(0.5)  # 25 frames come due while nobody reads
    late = [src.read() for _ in range(3)]
    assert src.stats.dropped["overrun"] >= 15
    # The reader gets the device's newest buffered frames, in order, not a half-second backlog.
    assert late[0].index - first.index > 15
    assert [f.index for f in late] == list(range(late[0].index, late[0].index + 3))
    assert time.time() - late[0].timestamp < 0.15


def test_a_reader_that_comes_back_late_does_not_make_the_next_frame_late(monkeypatch):
    """The next frame renders on the source's own thread, as a device captures on its own clock:
    a reader returning just before a frame is due gets it on time, not a render time later."""
    render_s = 0.04
    real = CameraSim.render

    def slow(self, start, end, rng):
        time.sleep(render_s)
        return real(self, start, end, rng)

    monkeypatch.setattr(CameraSim, "render", slow)
    src = SimulatedSource(SimCameraConfig(rate_hz=20.0, realtime=True, width=32, height=24))
    src.open()
    try:
        # Streaming starts. Rendering (40 ms) takes most of each 50 ms period, so a first frame
        # handed over late delays a few after it while the device catches up: read past that.
        for _ in range(6):
            src.read()
        lateness = []
        for _ in range(4):
            frame = src.read()
            # The reader was busy elsewhere until 5 ms before the next frame is due: rendering
            # it only now would hand it over ~35 ms late.
            time.sleep(max(0.0, frame.timestamp + 0.05 - 0.005 - time.time()))
            nxt = src.read()
            lateness.append(time.time() - nxt.timestamp)
        assert sorted(lateness)[len(lateness) // 2] < 0.02, lateness
    finally:
        src.close()


def test_realtime_stream_starts_at_the_first_read_not_at_open():
    """A device opened long before anyone reads hands over the next frame captured, not a backlog
    of everything since `open` (start-up would otherwise begin the run seconds behind)."""
    src = SimulatedSource(SimCameraConfig(rate_hz=50.0, realtime=True, width=32, height=24))
    src.open()
    try:
        time.sleep(0.3)  # 15 frames' worth
        first = src.read()
        assert 0 <= time.time() - first.timestamp < 0.1
        assert src.stats.dropped["overrun"] == 0  # nothing was streamed, so nothing was lost
    finally:
        src.close()


def test_the_simulated_device_renders_ahead_at_idle_priority():
    """Frames due within `render_ahead_s` are rendered ahead, on a thread at a lower priority than
    its reader's: the simulator's cost yields to the pipeline it feeds."""
    src = SimulatedSource(
        SimCameraConfig(rate_hz=50.0, realtime=True, width=32, height=24, render_ahead_s=0.1)
    )
    src.open()
    try:
        frame = src.read()
        queued = [i for i, _ in src._queue]
        assert queued[0] == frame.index + 1 and len(queued) >= 4  # 100 ms of 20 ms frames ahead
        assert src._queue[-1][1].result(timeout=5.0).index == queued[-1]
        device = src._device
        assert device is not None
        (thread,) = device._threads
        reader = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())  # untouched
        assert os.getpriority(os.PRIO_PROCESS, thread.native_id) == min(19, reader + 4)
        assert [src.read().index for _ in range(3)] == [frame.index + 1, frame.index + 2, frame.index + 3]
    finally:
        src.close()


def test_one_source_class_serves_every_modality_and_the_clock_is_a_field():
    sources = {
        m: make_source(m, parse_source(m, {"backend": "simulated"}))
        for m in (Modality.CAMERA, Modality.LIDAR, Modality.MICROPHONE)
    }
    assert {type(s) for s in sources.values()} == {SimulatedSource}
    assert [s.modality for s in sources.values()] == [Modality.CAMERA, Modality.LIDAR, Modality.MICROPHONE]
    with pytest.raises(ValueError, match=r"cam0: clock: monotonic needs realtime: true"):
        parse_source(Modality.CAMERA, {"backend": "simulated", "clock": "monotonic"}, source="cam0")
    with pytest.raises(ValueError, match=r"cam0: clock: Input should be 'unix' or 'monotonic'"):
        parse_source(
            Modality.CAMERA, {"backend": "simulated", "clock": "gps", "realtime": True}, source="cam0"
        )
