"""Synchronizer: synthetic camera 30 Hz, LiDAR 10 Hz and 16 kHz audio in 50 ms chunks.

Audio sample values are their absolute sample index, so a window's content shows exactly
which samples were cut.
"""

import dataclasses
import hashlib

import numpy as np
import pytest

from fusion.config import parse_config
from fusion.errors import ConfigError
from fusion.sample import Frame, Modality
from fusion.sync import AlignedSet, DropReason, SyncConfig, Synchronizer

CAM, LIDAR, MIC = Modality.CAMERA, Modality.LIDAR, Modality.MICROPHONE
RATE = 16000
CHUNK = 800  # samples: 50 ms
WINDOW = RATE  # audio_window_s = 1.0
SECONDS = 3.0
CAM_TIMES = np.arange(90) / 30
LIDAR_TIMES = np.arange(30) / 10
# A tick's deadline: the largest slop of a stream it waits for, plus max_delay_s (defaults).
REF_WAIT = 0.05 + 0.2  # the camera; the LiDAR is the reference

REF = SyncConfig(reference=LIDAR)
FIXED = SyncConfig(rate_hz=10.0)


def cam(t: float, sensor: str = "cam0") -> Frame:
    return Frame(
        modality=CAM,
        sensor_id=sensor,
        timestamp=float(t),
        wall_time=1e9 + t,
        data=np.zeros((2, 2, 3), np.uint8),
    )


def lidar(t: float) -> Frame:
    return Frame(
        modality=LIDAR,
        sensor_id="lidar0",
        timestamp=float(t),
        wall_time=1e9 + t,
        data=np.zeros((3, 4), np.float32),
    )


def mic_chunks(
    start_s: float = 0.0, seconds: float = SECONDS, rate: int = RATE, offset: float = 0.0
) -> list[Frame]:
    """Chunks whose samples hold their absolute index; stamped index / rate + offset."""
    first = round(start_s * rate)
    return [
        Frame(
            modality=MIC,
            sensor_id="mic0",
            timestamp=offset + i / rate,
            wall_time=1e9 + i / rate,
            data=np.arange(i, i + CHUNK, dtype=np.float32),
            sample_rate=float(rate),
            index=i // CHUNK,
        )
        for i in range(first, round(seconds * rate), CHUNK)
    ]


def scenario(cam_times=CAM_TIMES, lidar_times=LIDAR_TIMES, audio=True) -> list[Frame]:
    """All frames in capture order: a frame is available once its last sample is captured."""
    frames = [lidar(t) for t in lidar_times] + [cam(t) for t in cam_times]
    frames += mic_chunks() if audio else []
    return sorted(frames, key=lambda f: f.end_time)


def run(config: SyncConfig, frames: list[Frame]) -> tuple[list[AlignedSet], Synchronizer, list[float]]:
    """Push and poll each frame, then flush; also the watermark at which each tick came out."""
    sync, out, emitted_at, watermark = Synchronizer(config), [], [], -np.inf
    for f in frames:
        sync.push(f)
        watermark = max(watermark, f.end_time)
        ready = sync.poll()
        out += ready
        emitted_at += [watermark] * len(ready)
    out += sync.flush()
    assert [s.seq for s in out] == list(range(len(out)))
    assert_accounted(sync)
    return out, sync, emitted_at


def assert_accounted(sync: Synchronizer) -> None:
    """After flush every frame was used or dropped with a reason."""
    st = sync.stats
    for m, n in st.received.items():
        assert n == st.used[m] + sum(c for (dm, _), c in st.dropped.items() if dm is m), m


def digest(sets: list[AlignedSet]) -> str:
    h = hashlib.sha256()
    for s in sets:
        h.update(repr((s.seq, s.tick, s.missing, sorted(s.offsets.items()), s.audio_missing_s)).encode())
        for m, f in sorted(s.frames.items()):
            h.update(repr((m, f.sensor_id, f.timestamp, f.wall_time, f.index, f.sample_rate)).encode())
            h.update(f.data.tobytes())
    return h.hexdigest()


def check_audio(s: AlignedSet) -> None:
    """The window holds exactly the samples of [tick - 1 s, tick), or from 0 at the stream start."""
    end = round(s.tick * RATE)
    if end <= 0:
        assert MIC in s.missing
        return
    want = np.arange(max(0, end - WINDOW), end, dtype=np.float32)
    f = s.frames[MIC]
    np.testing.assert_array_equal(f.data, want)
    assert f.timestamp == pytest.approx(want[0] / RATE) and f.sample_rate == RATE
    assert s.audio_missing_s == pytest.approx((WINDOW - len(want)) / RATE)


def test_every_tick_gets_nearest_camera_and_an_exact_audio_window():
    out, sync, emitted_at = run(REF, scenario())
    assert [s.tick for s in out] == list(LIDAR_TIMES)
    for s in out:
        assert s.frames[LIDAR].timestamp == s.tick and s.offsets[LIDAR] == 0
        assert s.frames[CAM].timestamp == CAM_TIMES[round(s.tick * 30)]
        assert abs(s.offsets[CAM]) <= 1 / 60
        check_audio(s)
    full = [s for s in out if s.tick >= 1.0]
    assert all(len(s.frames[MIC].data) == WINDOW and s.audio_missing_s == 0 for s in full)
    st = sync.stats
    assert (st.ticks, st.incomplete_ticks, dict(st.missing), st.short_audio_ticks) == (30, 1, {MIC: 1}, 9)
    # Camera frames between ticks, and the audio after the last tick.
    assert st.dropped == {(CAM, DropReason.EVICTED_UNUSED): 60, (MIC, DropReason.EVICTED_UNUSED): 2}
    # Complete ticks go out as soon as every stream has passed them, not at the deadline.
    assert max(w - s.tick for s, w in zip(out, emitted_at, strict=False)) < 0.15


def test_jittered_timestamps_still_pick_the_nearest_frame():
    rng = np.random.default_rng(7)
    cams = CAM_TIMES + rng.uniform(-0.005, 0.005, CAM_TIMES.size)
    lidars = LIDAR_TIMES + rng.uniform(-0.005, 0.005, LIDAR_TIMES.size)
    out, sync, _ = run(REF, scenario(cams, lidars))
    assert [s.tick for s in out] == list(lidars)
    for s in out:
        assert s.frames[CAM].timestamp == cams[np.argmin(np.abs(cams - s.tick))]
        assert abs(s.offsets[CAM]) <= 1 / 60 + 0.01
        check_audio(s)
    assert sync.stats.missing == {MIC: 1}


def test_stalled_camera_marks_ticks_missing_after_the_deadline():
    cams = CAM_TIMES[(CAM_TIMES < 1.0) | (CAM_TIMES >= 2.0)]
    out, sync, emitted_at = run(REF, scenario(cams))
    assert len(out) == 30
    stalled = [s for s in out if CAM in s.missing]
    assert [round(s.tick, 6) for s in stalled] == [1.1, 1.2, 1.3, 1.4, 1.5, 1.6, 1.7, 1.8, 1.9]
    assert sync.stats.missing[CAM] == 9 and sync.stats.incomplete_ticks == 10  # + tick 0 without audio
    assert out[10].frames[CAM].timestamp == CAM_TIMES[29]  # tick 1.0: the last frame before the stall
    assert out[20].frames[CAM].timestamp == 2.0
    for s in stalled[:7]:  # waited out the deadline (1.8 and 1.9 end when the camera is back)
        waited = emitted_at[s.seq] - s.tick
        assert REF_WAIT < waited <= REF_WAIT + CHUNK / RATE + 1e-9


def test_stream_that_starts_late():
    out, sync, _ = run(REF, scenario(CAM_TIMES[CAM_TIMES > 0.75]))
    assert [s.tick for s in out if CAM in s.missing] == list(LIDAR_TIMES[:8])
    assert out[8].frames[CAM].timestamp == 0.8
    assert sync.stats.missing[CAM] == 8 and len(out) == 30


def test_stalled_reference_stops_the_ticks_and_the_buffer_stays_bounded():
    lidars = LIDAR_TIMES[(LIDAR_TIMES <= 0.5) | (LIDAR_TIMES >= 2.8)]
    frames = scenario(lidar_times=lidars, audio=False)
    config = SyncConfig(reference=LIDAR, modalities=[CAM, LIDAR])
    at = next(i for i, f in enumerate(frames) if f.timestamp >= 2.8)
    sync = Synchronizer(config)
    for f in frames[:at]:
        sync.push(f)
        sync.poll()
    assert sync.stats.ticks == 6  # 0.0 .. 0.5, then nothing while the LiDAR is silent
    # Gone already: camera frames up to 0.7 (watermark 2.7667 - buffer_s - slop), less 6 used.
    assert sync.stats.dropped[(CAM, DropReason.EVICTED_UNUSED)] == 22 - 6
    sync.push(lidar(0.6))  # a sweep from before the buffer horizon is no use any more
    assert sync.stats.dropped[(LIDAR, DropReason.LATE)] == 1
    out = []
    for f in frames[at:]:
        sync.push(f)
        out += sync.poll()
    out += sync.flush()
    np.testing.assert_allclose([s.tick for s in out], [2.8, 2.9])
    assert all(not s.missing for s in out)
    assert_accounted(sync)


def test_a_frame_serves_one_tick_only():
    config = SyncConfig(reference=LIDAR, modalities=[CAM, LIDAR], slop_s={"camera": 0.08, "lidar": 0.06})
    cams = [*LIDAR_TIMES[:10], 1.05, *LIDAR_TIMES[12:]]  # 1.05 is as near to tick 1.0 as to 1.1
    out, sync, _ = run(config, scenario(cams, audio=False))
    assert out[10].frames[CAM].timestamp == 1.05  # the earlier tick goes first
    assert out[11].missing == (CAM,) and sync.stats.missing[CAM] == 1


def test_early_stamped_audio_chunk_repeats_no_sample():
    chunks = mic_chunks()
    bad = 20  # stamped 2 ms early: it overlaps its predecessor by 32 samples
    chunks[bad] = dataclasses.replace(chunks[bad], timestamp=chunks[bad].timestamp - 0.002)
    frames = sorted([*[lidar(t) for t in LIDAR_TIMES], *chunks], key=lambda f: f.end_time)
    out, _, _ = run(SyncConfig(reference=LIDAR, modalities=[LIDAR, MIC]), frames)
    s = out[15]  # the window [0.5, 1.5) holds the chunk stamped at 1.0 - 0.002
    data = s.frames[MIC].data
    assert np.all(np.diff(data) > 0) and data[0] == 0.5 * RATE and data[-1] == 1.5 * RATE - 1
    assert len(data) == WINDOW - 32 and s.audio_missing_s == pytest.approx(0.002)
    assert all(len(s.frames[MIC].data) == WINDOW for s in out[21:])


@pytest.mark.parametrize("config", [REF, FIXED], ids=["reference", "rate"])
def test_arrival_order_within_max_delay_does_not_change_the_output(config):
    rng = np.random.default_rng(3)
    frames = scenario(
        CAM_TIMES + rng.uniform(-0.005, 0.005, CAM_TIMES.size),
        LIDAR_TIMES + rng.uniform(-0.005, 0.005, LIDAR_TIMES.size),
    )
    reference, _, _ = run(config, frames)
    again, _, _ = run(config, frames)
    assert digest(again) == digest(reference)  # same input, same bytes

    for seed in (1, 2):
        # Each sensor is a FIFO link with its own latency, up to 0.12 s: streams interleave freely.
        delay = np.random.default_rng(seed).uniform(0, 0.12, len(frames))
        arrival = np.array([f.end_time for f in frames]) + delay
        for m in Modality:
            idx = [i for i, f in enumerate(frames) if f.modality is m]
            arrival[idx] = np.maximum.accumulate(arrival[idx])
        order = np.argsort(arrival, kind="stable")
        assert not np.array_equal(order, np.arange(len(frames)))
        shuffled, _, _ = run(config, [frames[i] for i in order])
        assert digest(shuffled) == digest(reference)


def test_frame_arriving_after_its_tick_is_counted_late():
    frames = scenario()
    straggler = next(f for f in frames if f.modality is CAM and f.timestamp == 1.0)
    frames.remove(straggler)
    at = next(i for i, f in enumerate(frames) if f.end_time >= 1.5)
    out, sync, _ = run(REF, [*frames[:at], straggler, *frames[at:]])
    assert sync.stats.dropped[(CAM, DropReason.LATE)] == 1
    assert sync.stats.out_of_order[CAM] == 1
    assert out[10].frames[CAM].timestamp == CAM_TIMES[29]  # tick 1.0 went out with its neighbour
    clean, _, _ = run(REF, scenario())
    assert len(out) == 30 and digest(out[11:]) == digest(clean[11:])


@pytest.mark.parametrize(("tolerance", "counted"), [(0.0, 2), (0.05, 1)])
def test_backwards_timestamps_are_counted_and_used_when_still_useful(tolerance, counted):
    config = SyncConfig(reference=LIDAR, modalities=[CAM, LIDAR], out_of_order_tolerance_s=tolerance)
    frames = scenario(audio=False)
    i = next(i for i, f in enumerate(frames) if f.modality is CAM and f.timestamp == 0.5)
    frames[i], frames[i + 1] = frames[i + 1], frames[i]  # 0.5333 then 0.5: a step back of 33 ms
    clock_reset = cam(0.2)  # far behind everything: no tick can use it any more
    out, sync, _ = run(config, [*frames, clock_reset])
    assert sync.stats.out_of_order[CAM] == counted
    assert out[5].frames[CAM].timestamp == 0.5  # the backwards frame was still in time for tick 0.5
    assert sync.stats.dropped[(CAM, DropReason.LATE)] == 1
    clean, _, _ = run(config, scenario(audio=False))
    assert digest(out) == digest(clean)


def test_duplicate_frames_are_counted_and_change_nothing():
    frames = []
    for f in scenario():
        repeat = f.modality is CAM or (f.modality is LIDAR and f.timestamp in (0.5, 0.6))
        frames += [f, f] if repeat else [f]
    out, sync, _ = run(REF, frames)
    clean, _, _ = run(REF, scenario())
    assert digest(out) == digest(clean)
    assert sync.stats.dropped[(CAM, DropReason.DUPLICATE)] == 90
    assert sync.stats.dropped[(LIDAR, DropReason.DUPLICATE)] == 2


def test_foreign_frames_are_counted_and_the_stream_goes_on():
    config = SyncConfig(reference=LIDAR, modalities=[CAM, LIDAR, MIC])
    frames = scenario()
    odd = [cam(0.4, sensor="cam1"), mic_chunks(0.5, 0.55, rate=8000)[0]]
    out, sync, _ = run(config, frames[:40] + odd + frames[40:])
    assert sync.stats.dropped[(CAM, DropReason.UNEXPECTED_SENSOR)] == 1
    assert sync.stats.dropped[(MIC, DropReason.SAMPLE_RATE_CHANGED)] == 1
    assert digest(out) == digest(run(config, frames)[0])
    no_mic = SyncConfig(reference=LIDAR, modalities=[CAM, LIDAR])
    out, sync, _ = run(no_mic, frames)
    assert sync.stats.dropped[(MIC, DropReason.UNEXPECTED_MODALITY)] == 60 and len(out) == 30
    assert all(MIC not in s.frames and not s.missing for s in out)


def test_fixed_rate_ticks_continue_through_a_stalled_lidar():
    frames = scenario(lidar_times=LIDAR_TIMES[(LIDAR_TIMES < 1.0) | (LIDAR_TIMES >= 2.0)])
    out, sync, _ = run(FIXED, [*frames, cam(1.01)])  # the last one: ticks 1.0 and 1.1 are long out
    ticks = np.array([s.tick for s in out])
    np.testing.assert_allclose(ticks, np.arange(31) / 10)  # through the stall, up to the last sample
    no_lidar = [round(s.tick, 6) for s in out if LIDAR in s.missing]
    assert no_lidar == [1.0, 1.1, 1.2, 1.3, 1.4, 1.5, 1.6, 1.7, 1.8, 1.9, 3.0]
    assert sync.stats.missing[LIDAR] == 11
    assert sync.stats.dropped[(CAM, DropReason.LATE)] == 1
    for s in out:
        check_audio(s)
    assert all(abs(s.offsets[CAM]) <= 1 / 60 + 1e-9 for s in out[:-1])
    assert out[-1].frames[CAM].timestamp == CAM_TIMES[-1]  # 1/30 s before the last tick


def test_fixed_rate_start_and_now():
    late_start = [*[lidar(t + 0.037) for t in LIDAR_TIMES], *[cam(t + 0.037) for t in CAM_TIMES]]
    late_start += mic_chunks(offset=0.037)
    frames = sorted(late_start, key=lambda f: f.end_time)
    out, _, _ = run(FIXED, frames)
    assert out[0].tick == 0.1 and all(CAM in s.frames for s in out[:-1])  # rounded up to the grid
    anchored, _, _ = run(SyncConfig(rate_hz=10.0, start=0.05), frames)
    np.testing.assert_allclose([s.tick for s in anchored[:3]], [0.05, 0.15, 0.25])

    # Every sensor goes quiet at 1 s: the caller's clock still moves the ticks out.
    sync = Synchronizer(FIXED)
    for f in scenario():
        if f.timestamp < 1.0:
            sync.push(f)
    got = sync.poll()
    assert got[-1].tick == 0.8  # 0.9 still waits for LiDAR
    got += sync.poll(now=1.5)
    assert round(got[-1].tick, 6) == 1.2  # 1.3 waits until now > 1.3 + max slop + max_delay
    assert {CAM, LIDAR} <= set(got[-1].missing) and got[-1].audio_missing_s == pytest.approx(0.2)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"reference": "lidar", "rate_hz": 10.0}, r"exactly one of `reference` .* or `rate_hz`"),
        ({}, r"exactly one of `reference`"),
        (
            {"reference": "lidar", "modalities": ["camera", "radar"]},
            r"modalities\[1\]: Input should be 'camera'",
        ),
        ({"reference": "lidar", "slop_s": {"radar": 0.1}}, r"slop_s\.radar: Input should be 'camera'"),
        (
            {"reference": "lidar", "slop_s": {"camera": -0.1, "lidar": 0.06}},
            r"slop_s\.camera: .*greater than or equal to 0",
        ),
        ({"reference": "lidar", "slop_s": {"camera": 0.05}}, r"slop_s has no entry for lidar"),
        (
            {"reference": "lidar", "slop_s": {"camera": 0.05, "lidar": 0.06, "microphone": 0.1}},
            r"slop_s\.microphone",
        ),
        ({"reference": "microphone"}, r"reference cannot be microphone"),
        ({"reference": "camera", "modalities": ["lidar"]}, r"reference 'camera' is not one of modalities"),
        ({"reference": "lidar", "start": 0.0}, r"start applies only with rate_hz"),
        ({"rate_hz": -1.0}, r"rate_hz: Input should be greater than 0"),
        ({"reference": "lidar", "buffer_s": 0.1}, r"buffer_s \(0.1\) must be at least"),
        ({"reference": "lidar", "max_delay": 0.2}, r"max_delay: Extra inputs are not permitted"),
    ],
)
def test_bad_config_names_the_key(data, message):
    with pytest.raises(ConfigError, match=message):
        parse_config(SyncConfig, data, source="sync")


def test_without_waiting_for_slop_ticks_leave_as_soon_as_every_stream_reaches_them():
    eager = REF.model_copy(update={"wait_for_slop": False})
    assert digest(run(eager, scenario())[0]) == digest(run(REF, scenario())[0])  # same output in order
    sync = Synchronizer(eager)
    patient = Synchronizer(REF)
    for f in scenario():
        if f.timestamp <= 0.5 + 1e-9:  # streams stop exactly at tick 0.5
            sync.push(f)
            patient.push(f)
    assert sync.poll()[-1].tick == 0.5  # the camera frame at 0.5 settles it
    assert patient.poll()[-1].tick == 0.4  # 0.5 waits for a camera frame past 0.5 + slop


def test_ticks_on_unix_time_complete_with_the_chunk_that_ends_at_them():
    """Live sources stamp Unix time (~1.8e9 s): there an audio chunk's end, computed as its start
    plus its length, can land one float step short of the LiDAR tick it ends at. The tick must
    still be complete when that chunk arrives, not wait 50 ms for the next one."""
    sync = Synchronizer(SyncConfig(reference=LIDAR, wait_for_slop=False))
    first = 17_961_793_330  # LiDAR sweep index at 10 Hz on the Unix-time grid
    late = 0
    for k in range(first, first + 100):
        tick = k / 10
        # The simulated microphone's chunks: 800 samples, starting on exact sample counts.
        start = (2 * k - 1) * CHUNK / RATE
        sync.push(mic_chunks_at(start))
        sync.push(cam(tick))
        sync.push(lidar(tick))
        out = sync.poll(now=tick)  # `now` at the tick: no deadline has passed
        late += [a.tick for a in out] != [tick]
    assert late == 0


def mic_chunks_at(start: float) -> Frame:
    return Frame(
        modality=MIC,
        sensor_id="mic0",
        timestamp=start,
        wall_time=start,
        data=np.zeros(CHUNK, np.float32),
        sample_rate=float(RATE),
    )
