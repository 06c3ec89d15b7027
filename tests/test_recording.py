"""Recordings: writing in batches, merged reading, replay pacing, errors, the source backend, probes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.ipc as ipc
import pytest

from fusion.clock import Pacer
from fusion.errors import SourceError
from fusion.recording import MANIFEST, RecordingReader, RecordingWriter, Replayer
from fusion.recording.source import RecordingSource, probe_recording, probe_stream_file
from fusion.sample import Frame, FusedSample, Modality, Segment
from fusion.schema import VERSION_KEY
from fusion.sensors import EndOfStream
from fusion.sensors.recording_config import RecordingSourceConfig
from fusion.sensors.registry import source_class
from tests.fakes import FakeClock

T0 = 4321.123456789012  # recording clock; not representable in float32
RATE = 16000
CHUNK = 1600  # 0.1 s of audio per microphone frame


def camera_frames(rng: np.random.Generator, seconds: float = 1.0, sensor_id: str = "cam") -> list[Frame]:
    return [
        Frame(
            modality=Modality.CAMERA,
            sensor_id=sensor_id,
            timestamp=T0 + k / 30,
            wall_time=1.7e9 + k / 30,
            data=rng.integers(0, 256, (12, 16, 3), dtype=np.uint8),
            index=k,
        )
        for k in range(int(seconds * 30))
    ]


def mic_frames(seconds: float = 1.0) -> list[Frame]:
    t = np.arange(int(seconds * RATE)) / RATE
    pcm = (0.3 * np.sin(2 * np.pi * 440 * t) + 0.05 * np.sin(2 * np.pi * 3000 * t)).astype(np.float32)
    return [
        Frame(
            modality=Modality.MICROPHONE,
            sensor_id="mic",
            timestamp=T0 + k * CHUNK / RATE,
            wall_time=1.7e9 + k * CHUNK / RATE,
            data=pcm[k * CHUNK : (k + 1) * CHUNK],
            sample_rate=float(RATE),
            index=k,
        )
        for k in range(len(pcm) // CHUNK)
    ]


def lidar_frames(rng: np.random.Generator, seconds: float = 1.0) -> list[Frame]:
    return [
        Frame(
            modality=Modality.LIDAR,
            sensor_id="lidar",
            timestamp=T0 + k * 0.1,
            wall_time=1.7e9 + k * 0.1,
            data=rng.uniform(-50, 50, (200 + 37 * k, 4)).astype(np.float32),  # point count varies
            index=k,
        )
        for k in range(int(seconds * 10))
    ]


def rig_frames(seed: int = 0) -> list[Frame]:
    """Camera 30 Hz, microphone 0.1 s chunks, LiDAR 10 Hz over one second, in capture order."""
    rng = np.random.default_rng(seed)
    frames = camera_frames(rng) + mic_frames() + lidar_frames(rng)
    return sorted(frames, key=lambda f: (f.timestamp, f.sensor_id, f.index))


def record(directory: Path, frames: list[Frame], **kwargs) -> Path:
    with RecordingWriter(directory, **kwargs) as writer:
        for frame in frames:
            writer.write(frame)
    return directory


def assert_frames_equal(got: list[Frame], want: list[Frame]) -> None:
    assert len(got) == len(want)
    for g, w in zip(got, want, strict=True):
        assert (g.modality, g.sensor_id, g.timestamp, g.wall_time, g.index, g.sample_rate) == (
            w.modality,
            w.sensor_id,
            w.timestamp,
            w.wall_time,
            w.index,
            w.sample_rate,
        )
        assert g.data.dtype == w.data.dtype and np.array_equal(g.data, w.data)


@pytest.fixture(scope="module")
def rig() -> list[Frame]:
    return rig_frames()


@pytest.fixture
def recording(tmp_path, rig) -> Path:
    return record(tmp_path / "rec", rig, batch_frames=8)


# --- write and read back ---------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["arrow", "parquet"])
def test_three_sensors_read_back_merged_in_timestamp_order(tmp_path, rig, fmt):
    shuffled = sorted(rig, key=lambda f: (f.sensor_id, f.index))  # streams written one after another
    directory = record(tmp_path / "rec", shuffled, format=fmt, batch_frames=8)
    assert sorted(p.name for p in directory.iterdir()) == sorted(
        [MANIFEST, f"cam.{fmt}", f"lidar.{fmt}", f"mic.{fmt}"]
    )
    reader = RecordingReader(directory)
    assert {sid: (s.modality, s.frames) for sid, s in reader.sensors.items()} == {
        "cam": (Modality.CAMERA, 30),
        "lidar": (Modality.LIDAR, 10),
        "mic": (Modality.MICROPHONE, 10),
    }
    assert reader.sensors["lidar"].start == T0 and reader.sensors["lidar"].end == T0 + 9 * 0.1
    merged = list(reader.frames())
    assert_frames_equal(merged, rig)
    assert [f.sensor_id for f in merged[:3]] == ["cam", "lidar", "mic"]  # the tie at T0, by sensor id
    assert_frames_equal(list(reader.frames("lidar")), [f for f in rig if f.sensor_id == "lidar"])


def test_equal_timestamps_order_by_sensor_id_then_index(tmp_path):
    rng = np.random.default_rng(1)

    def frame(sensor_id: str, index: int, t: float) -> Frame:
        return Frame(Modality.LIDAR, sensor_id, t, 0.0, rng.random((3, 4), dtype=np.float32), index=index)

    written = [
        frame("b", 0, 1.0),
        frame("b", 1, 1.0),
        frame("a", 7, 1.0),
        frame("a", 8, 2.0),
        frame("b", 2, 1.5),
    ]
    reader = RecordingReader(record(tmp_path / "rec", written, batch_frames=2))
    assert [(f.sensor_id, f.index) for f in reader.frames()] == [
        ("a", 7),
        ("b", 0),
        ("b", 1),
        ("b", 2),
        ("a", 8),
    ]


@pytest.mark.parametrize("fmt", ["arrow", "parquet"])
def test_fused_samples_are_recorded(tmp_path, fmt):
    rng = np.random.default_rng(2)
    samples = [
        FusedSample(
            seq=k,
            timestamp=T0 + k / 10,
            segments={
                Modality.LIDAR: Segment(
                    rng.random((5 + k, 2), dtype=np.float32),
                    positions=rng.random((5 + k, 3), dtype=np.float32),
                )
            }
            if k % 2
            else {},
            label=k if k % 3 else None,
        )
        for k in range(7)
    ]
    with RecordingWriter(tmp_path / "rec", format=fmt, batch_frames=3) as writer:
        for sample in samples:
            writer.write_sample(sample)
        with pytest.raises(ValueError, match="sample 9: camera values must be float32, got float64"):
            writer.write_sample(
                FusedSample(
                    seq=9,
                    timestamp=T0 + 1,
                    segments={Modality.CAMERA: Segment(np.zeros((1, 3)), grid=(1, 1))},
                )
            )
    reader = RecordingReader(tmp_path / "rec")
    assert reader.manifest.samples is not None and reader.manifest.samples.count == 7
    back = list(reader.samples())
    assert [(s.seq, s.timestamp, s.label, tuple(s.segments)) for s in back] == [
        (s.seq, s.timestamp, s.label, tuple(s.segments)) for s in samples
    ]
    for got, want in zip(back, samples, strict=True):
        for m, seg in want.segments.items():
            assert np.array_equal(got.segments[m].values, seg.values)
            assert np.array_equal(got.segments[m].positions, seg.positions)


def test_arrow_recording_is_read_from_the_memory_map_without_copies(recording, rig):
    reader = RecordingReader(recording)
    before = pa.total_allocated_bytes()
    frames = list(reader.frames())
    assert pa.total_allocated_bytes() - before == 0
    assert not frames[0].data.flags.writeable
    assert_frames_equal(frames, rig)  # the views stay valid after the reader closed its maps


# --- bounded memory --------------------------------------------------------------------------


def test_writer_never_buffers_more_than_batch_frames(tmp_path):
    pcm = np.linspace(-1, 1, 2000 * 32, dtype=np.float32)
    most = 0
    with RecordingWriter(tmp_path / "rec", batch_frames=64) as writer:
        for k in range(2000):
            writer.write(
                Frame(Modality.MICROPHONE, "mic", k * 0.002, 0.0, pcm[k * 32 : (k + 1) * 32], RATE, k)
            )
            most = max(most, writer.buffered)
            assert writer.buffered <= 64
    assert most == 63  # the 64th frame triggers the write
    with ipc.open_file(pa.memory_map(str(tmp_path / "rec" / "mic.arrow"))) as f:
        sizes = [f.get_batch(i).num_rows for i in range(f.num_record_batches)]
    assert sizes == [64] * 31 + [2000 - 31 * 64]


def test_writer_flushes_on_batch_bytes(tmp_path):
    rng = np.random.default_rng(3)
    frames = [
        Frame(Modality.LIDAR, "lidar", float(k), 0.0, rng.random((1000, 4), dtype=np.float32), index=k)
        for k in range(10)
    ]
    record(tmp_path / "rec", frames, batch_bytes=40_000)  # 16 000 bytes per frame
    with ipc.open_file(pa.memory_map(str(tmp_path / "rec" / "lidar.arrow"))) as f:
        assert [f.get_batch(i).num_rows for i in range(f.num_record_batches)] == [3, 3, 3, 1]


# --- writer errors ---------------------------------------------------------------------------


def test_writer_rejects_bad_input(tmp_path, rig):
    cam = [f for f in rig if f.sensor_id == "cam"]
    with RecordingWriter(tmp_path / "rec") as writer:
        writer.write(cam[1])
        with pytest.raises(ValueError, match=r"sensor 'cam': timestamp .* is before the previous"):
            writer.write(cam[0])
        mic = mic_frames()[0]
        with pytest.raises(ValueError, match="sensor 'cam': a microphone frame in a camera stream"):
            writer.write(Frame(Modality.MICROPHONE, "cam", T0 + 1, 0.0, mic.data, RATE))
        with pytest.raises(ValueError, match=r"sensor_id '\.\./x' cannot name a stream file"):
            writer.write(Frame(Modality.MICROPHONE, "../x", T0, 0.0, mic.data, RATE))
        writer.write(cam[2])  # the recording goes on
    with pytest.raises(ValueError, match="already closed"):
        writer.write(cam[3])
    assert RecordingReader(tmp_path / "rec").sensors["cam"].frames == 2
    with pytest.raises(FileExistsError, match="already holds a recording"):
        RecordingWriter(tmp_path / "rec")
    with pytest.raises(ValueError, match="format must be one of"):
        RecordingWriter(tmp_path / "other", format="csv")  # type: ignore[arg-type]


# --- reader errors ---------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["arrow", "parquet"])
def test_truncated_stream_file_is_named(tmp_path, rig, fmt):
    directory = record(tmp_path / "rec", rig, format=fmt, batch_frames=8)
    path = directory / f"lidar.{fmt}"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(ValueError, match=rf"{path}: not a readable {fmt} file"):
        RecordingReader(directory)


def test_missing_manifest_names_the_directory(recording):
    (recording / MANIFEST).unlink()
    with pytest.raises(FileNotFoundError, match=rf"{recording}: not a recording \(no manifest.json\)"):
        RecordingReader(recording)
    with pytest.raises(FileNotFoundError, match="no such recording directory"):
        RecordingReader(recording / "nope")


def test_missing_stream_file_is_named(recording):
    (recording / "mic.arrow").unlink()
    with pytest.raises(FileNotFoundError, match=rf"{recording / 'mic.arrow'}: file of sensor 'mic'"):
        RecordingReader(recording)


def _edit_manifest(recording: Path, **changes) -> None:
    path = recording / MANIFEST
    path.write_text(json.dumps({**json.loads(path.read_text()), **changes}))


def test_manifest_of_another_version_or_broken_is_refused(recording):
    _edit_manifest(recording, schema_version=99)
    with pytest.raises(ValueError, match="recording written with schema version 99; this build reads 1"):
        RecordingReader(recording)
    _edit_manifest(recording, schema_version=1, format="csv")
    with pytest.raises(ValueError, match=r"manifest.json: format: Input should be 'arrow' or 'parquet'"):
        RecordingReader(recording)
    (recording / MANIFEST).write_text("{not json")
    with pytest.raises(ValueError, match=r"manifest.json: not valid JSON"):
        RecordingReader(recording)


def test_manifest_file_names_must_stay_in_the_directory(recording):
    manifest = json.loads((recording / MANIFEST).read_text())
    manifest["sensors"]["cam"]["file"] = "../cam.arrow"
    (recording / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match=r"'\.\./cam\.arrow' is not a plain file name"):
        RecordingReader(recording)


def test_manifest_disagreeing_with_the_file_is_refused(recording):
    manifest = json.loads((recording / MANIFEST).read_text())
    manifest["sensors"]["cam"]["frames"] = 31
    (recording / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match=r"cam.arrow: manifest.json lists 31 rows, the file holds 30"):
        RecordingReader(recording)


def _rewrite(path: Path, edit) -> None:
    """Rewrite an Arrow stream file batch by batch through `edit(i, batch) -> batch`."""
    with ipc.open_file(pa.py_buffer(path.read_bytes())) as f:  # not mapped: the file is overwritten
        batches = [edit(i, f.get_batch(i)) for i in range(f.num_record_batches)]
    with ipc.new_file(str(path), batches[0].schema) as writer:
        for batch in batches:
            writer.write_batch(batch)


def test_stream_file_of_another_schema_version_is_named(recording):
    path = recording / "cam.arrow"
    _rewrite(path, lambda i, b: b.replace_schema_metadata({**b.schema.metadata, VERSION_KEY: b"99"}))
    with pytest.raises(
        ValueError, match=rf"{path}: recording written with schema version 99; this build reads 1"
    ):
        RecordingReader(recording)


def _break_batch(target: int):
    """An edit for `_rewrite`: batch `target` gets a shape that does not match its data."""

    def edit(i: int, batch: pa.RecordBatch) -> pa.RecordBatch:
        if i != target:
            return batch
        column = batch.column("data")
        shapes = column.storage.field("shape").to_pylist()
        shapes[0] = [shapes[0][0] + 1, *shapes[0][1:]]
        storage = pa.StructArray.from_arrays(
            [column.storage.field("data"), pa.array(shapes, column.storage.type.field("shape").type)],
            fields=list(column.storage.type),
        )
        arrays = [*batch.columns[:-1], column.type.wrap_array(storage)]  # `data` is the last column
        return pa.RecordBatch.from_arrays(arrays, schema=batch.schema)

    return edit


def test_corrupt_batch_raises_naming_file_and_batch(recording):
    path = recording / "cam.arrow"
    _rewrite(path, _break_batch(1))
    with pytest.raises(ValueError, match=rf"{path} batch 1: column 'data' row 0: shape \(13, 16, 3\)"):
        list(RecordingReader(recording).frames())


# --- replay ----------------------------------------------------------------------------------


@pytest.mark.parametrize("speed", [1.0, 2.0])
def test_replay_yields_each_frame_at_its_scheduled_time(recording, rig, speed):
    clock = FakeClock()
    replay = Replayer(RecordingReader(recording), speed=speed, clock=clock, sleep=clock.sleep)
    yielded = [(frame, clock.now) for frame in replay]
    assert_frames_equal([f for f, _ in yielded], rig)
    start = yielded[0][1]
    for frame, at in yielded:
        assert at == pytest.approx(start + (frame.timestamp - T0) / speed, abs=1e-9)
    distinct_times = len({f.timestamp for f in rig})
    assert len(clock.sleeps) == distinct_times - 1  # frames sharing a timestamp never sleep
    assert sum(clock.sleeps) == pytest.approx((rig[-1].timestamp - T0) / speed, abs=1e-9)


def test_replay_without_speed_never_sleeps(recording, rig):
    clock = FakeClock()
    frames = list(Replayer(RecordingReader(recording), speed=None, clock=clock, sleep=clock.sleep))
    assert_frames_equal(frames, rig)
    assert clock.sleeps == []


def test_replay_behind_schedule_does_not_sleep_or_skip(recording, rig):
    clock = FakeClock()
    frames = []
    for frame in Replayer(RecordingReader(recording), speed=1.0, clock=clock, sleep=clock.sleep):
        frames.append(frame)
        clock.now += 0.5  # a consumer slower than the recording
    assert clock.sleeps == []
    assert len(frames) == len(rig)


def test_replay_twice_gives_identical_frames(recording):
    replay = Replayer(RecordingReader(recording), speed=None)
    assert_frames_equal(list(replay), list(replay))


def test_replay_rejects_bad_speed(recording):
    for speed in (0.0, -1.0, float("inf"), float("nan")):
        with pytest.raises(ValueError, match="speed must be a positive number or None"):
            Replayer(RecordingReader(recording), speed=speed)


# --- source backend --------------------------------------------------------------------------


def test_recording_sources_are_registered():
    """One class serves every modality; a source reads its modality's stream."""
    for modality in Modality:
        assert source_class(modality, "recording") is RecordingSource
    with pytest.raises(TypeError, match="give the modality"):
        RecordingSource(RecordingSourceConfig(path="rec"))


def test_source_replays_one_stream_then_ends(recording, rig):
    config = RecordingSourceConfig(
        backend="recording", path=str(recording)
    )  # sensor_id: the only lidar stream
    with RecordingSource(config, modality=Modality.LIDAR) as source:
        assert source.sensor_id == "lidar"
        frames = list(source)
        with pytest.raises(EndOfStream):
            source.read()
    assert_frames_equal(frames, [f for f in rig if f.sensor_id == "lidar"])
    assert source.stats.frames == 10 and not source.stats.errors


def test_source_open_errors_name_the_problem(tmp_path, recording, rig):
    missing = RecordingSourceConfig(backend="recording", path=str(tmp_path / "nope"))
    with pytest.raises(SourceError, match=rf"camera recording {tmp_path / 'nope'}: .*no such recording"):
        RecordingSource(missing, modality=Modality.CAMERA).open()
    wrong = RecordingSourceConfig(backend="recording", path=str(recording), sensor_id="mic")
    with pytest.raises(SourceError, match=r"no camera stream 'mic' \(recorded camera: cam\)"):
        RecordingSource(wrong, modality=Modality.CAMERA).open()
    rng = np.random.default_rng(4)
    two = record(tmp_path / "two", camera_frames(rng, 0.2, "front") + camera_frames(rng, 0.2, "rear"))
    ambiguous = RecordingSourceConfig(backend="recording", path=str(two))
    with pytest.raises(SourceError, match="set sensor_id to one of the recorded camera streams: front, rear"):
        RecordingSource(ambiguous, modality=Modality.CAMERA).open()


def test_source_skips_a_corrupt_batch_and_goes_on(recording, rig):
    _rewrite(recording / "cam.arrow", _break_batch(1))
    config = RecordingSourceConfig(backend="recording", path=str(recording), sensor_id="cam")
    with RecordingSource(config, modality=Modality.CAMERA) as source:
        frames = list(source)
    assert source.stats.errors["corrupt_batch"] == 1
    cam = [f for f in rig if f.sensor_id == "cam"]
    assert_frames_equal(frames, cam[:8] + cam[16:])  # batch 1 held frames 8..15


# --- probes ----------------------------------------------------------------------------------


def test_probe_recording_reports_every_sensor(recording):
    report = probe_recording(recording)
    assert (report.modality, report.backend, report.frames) == (Modality.CAMERA, "recording", 30)
    assert report.start == T0 and report.shapes == "12x16x3 uint8"
    assert report.rate == pytest.approx(30.0)
    assert {sid: s["frames"] for sid, s in report.details["sensors"].items()} == {
        "cam": 30,
        "lidar": 10,
        "mic": 10,
    }
    assert report.details["format"] == "arrow" and report.details["samples"] == 0


@pytest.mark.parametrize("fmt", ["arrow", "parquet"])
def test_probe_stream_file(tmp_path, fmt):
    directory = record(tmp_path / "rec", mic_frames(), format=fmt, batch_frames=4)
    report = probe_stream_file(directory / f"mic.{fmt}")
    assert (report.modality, report.frames, report.shapes) == (Modality.MICROPHONE, 10, "16000 Hz mono")
    assert (report.start, report.end) == (T0, T0 + 9 * CHUNK / RATE)
    assert report.details["sensor_ids"] == ["mic"]


def test_probe_stream_file_refuses_a_samples_file(tmp_path):
    with RecordingWriter(tmp_path / "rec") as writer:
        writer.write_sample(FusedSample(seq=0, timestamp=1.0, segments={}))
    with pytest.raises(ValueError, match="holds 'samples' data, expected 'frames'"):
        probe_stream_file(tmp_path / "rec" / "samples.arrow")


# --- realtime: a recording as a live device ---------------------------------------------------


def realtime_lidar(recording: Path, clock: FakeClock) -> RecordingSource:
    source = RecordingSource(
        RecordingSourceConfig(backend="recording", path=str(recording), realtime=True),
        modality=Modality.LIDAR,
    )
    source._buffer.pacer = Pacer(1.0, clock=clock, sleep=clock.sleep, anchor=(0.0, 0.0))
    source.open()
    return source


def test_realtime_recording_loops_on_the_wall_clock_restamped(recording, rig):
    clock = FakeClock(now=1000.25)  # a quarter of the way into a loop of the 1 s recording
    source = realtime_lidar(recording, clock)
    assert source.period == pytest.approx(1.0)  # every stream's span plus one of its frame periods
    got = [(source.read(), clock.now) for _ in range(25)]
    recorded = [f for f in rig if f.sensor_id == "lidar"]
    assert got[0][0].timestamp == pytest.approx(1000.3)  # joins at the next frame due
    for k, (frame, read_at) in enumerate(got):
        want = recorded[(k + 3) % 10]
        assert frame.timestamp == pytest.approx(1000.3 + 0.1 * k, abs=1e-6)  # seamless across loops
        assert frame.wall_time == frame.timestamp == pytest.approx(read_at, abs=1e-6)  # handed over when due
        assert frame.index == k + 3 + 10 * 1000
        assert np.array_equal(frame.data, want.data)
    assert source.stats.frames == 25 and not source.stats.dropped


def test_realtime_recording_times_out_then_skips_what_a_device_buffer_lost(recording):
    clock = FakeClock(now=1000.25)
    source = realtime_lidar(recording, clock)
    source.read()
    with pytest.raises(TimeoutError, match=r"next frame due in 0\.100 s"):
        source.read(timeout=0.0)
    assert source.read().timestamp == pytest.approx(1000.4)  # the frame held by the poll
    clock.now += 3.0  # the reader stalls: the buffer holds the newest second only
    frame = source.read()
    assert frame.timestamp >= clock.now - 1.0
    assert source.stats.dropped["overrun"] == round((frame.timestamp - 1000.5) / 0.1)


def test_realtime_recording_needs_two_frames_per_stream(tmp_path, rig):
    directory = record(tmp_path / "one", [next(f for f in rig if f.sensor_id == "lidar")])
    with pytest.raises(SourceError, match="needs at least 2 frames per stream"):
        realtime_lidar(directory, FakeClock())
