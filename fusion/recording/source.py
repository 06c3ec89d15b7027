"""The `recording` source backend (one recorded stream replayed as a sensor) and the probes that
describe a recording directory or one of its stream files for `fusion inspect`."""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Generator, Iterator
from pathlib import Path

import pyarrow.compute as pc
from pydantic import Field

from fusion.clock import Pacer
from fusion.errors import InputError, SourceError
from fusion.recording.manifest import MANIFEST, SUFFIX
from fusion.recording.reader import RecordingReader, StreamFile
from fusion.sample import MODALITY_ORDER, Frame, Modality
from fusion.schema import FRAMES, check_schema, schema_modality, table_to_frames
from fusion.sensors.registry import FileReport, register_probe, register_source
from fusion.sensors.source import EndOfStream, Source, SourceConfig


class RecordingSourceConfig(SourceConfig):
    """Replay one stream of a recording as a sensor.

    `sensor_id` picks the stream; empty: the recording's only stream of this modality.
    """

    path: str  # the recording directory (holds manifest.json)
    # Replay the stream as a live device would deliver it: on the wall clock, looping, each frame
    # restamped to when it is handed over. A live rig fed pre-rendered frames (a real rig's cost
    # without the simulator's rendering); every stream of every rig on the same loop, so a rig's
    # streams stay aligned as recorded.
    realtime: bool = False
    # Realtime: seconds of frames the device holds for a reader that falls behind; older ones are
    # skipped and counted (`overrun`), as the simulated device does.
    buffer_s: float = Field(default=1.0, gt=0)


class RecordingSource(Source):
    """A finite source over one recorded stream: never waits on a clock (pace with `Replayer`).

    A corrupt batch is skipped and counted under `stats.errors["corrupt_batch"]`; the
    stream goes on with the next batch.

    With `realtime` it is an endless live source: the recording repeats every `period` seconds
    (its streams' common span, one frame period past the last frame, so loops join seamlessly)
    on a grid anchored at Unix time 0, a frame recorded `r` seconds after the recording's start
    is due at `k * period + r`, and `read(timeout)` blocks until the next frame is due, as a
    device does. The first read joins the loop at the present; a reader more than `buffer_s`
    behind skips the frames a device's buffer would have overwritten.
    """

    backend = "recording"
    config_cls = RecordingSourceConfig

    def __init__(self, config: SourceConfig) -> None:
        super().__init__(config)
        assert isinstance(config, RecordingSourceConfig)
        self.config: RecordingSourceConfig = config
        self._frames: Iterator[Frame] | None = None
        self._reader: RecordingReader | None = None
        # Realtime: (loop number, the loop's frames), the frame read but not yet due, the loop's
        # period and the recording's start; frame times are Unix times, mapped onto the wall clock.
        self._loop: tuple[int, Iterator[Frame]] | None = None
        self._held: Frame | None = None
        self.period = 0.0
        self._start = 0.0
        self._count = 0
        self._pacer = Pacer(1.0, clock=time.time, anchor=(0.0, 0.0))

    def open(self) -> None:
        where = f"{self.modality.value} recording {self.config.path}"
        try:
            reader = RecordingReader(self.config.path)
        except (OSError, ValueError) as err:
            raise SourceError(f"{where}: {err}") from None
        streams = {sid: s for sid, s in reader.sensors.items() if s.modality is self.modality}
        if self.config.sensor_id:
            if self.config.sensor_id not in streams:
                raise SourceError(
                    f"{where}: no {self.modality.value} stream {self.config.sensor_id!r} "
                    f"(recorded {self.modality.value}: {', '.join(sorted(streams)) or 'none'})"
                )
            stream_id = self.config.sensor_id
        elif len(streams) == 1:
            (stream_id,) = streams
        else:
            raise SourceError(
                f"{where}: set sensor_id to one of the recorded {self.modality.value} streams: "
                f"{', '.join(sorted(streams)) or 'none'}"
            )
        self.sensor_id = stream_id
        self._reader = reader
        self._frames = self._stream_frames()
        if self.config.realtime:
            self.period, self._start = loop_period(reader)
            self._count = reader.sensors[stream_id].frames
            self._loop, self._held = None, None

    def _stream_frames(self) -> Iterator[Frame]:
        assert self._reader is not None
        return self._reader.frames(self.sensor_id, on_error=lambda msg: self.skip("corrupt_batch", msg))

    def read(self, timeout: float | None = None) -> Frame:
        """The next recorded frame; never blocks on a clock. EndOfStream after the last.

        Realtime: blocks until the next frame is due, TimeoutError past `timeout`; never ends.
        """
        if self._frames is None:
            raise SourceError(f"{self.modality.value}/{self.sensor_id}: read() before open()")
        if self.config.realtime:
            return self._read_realtime(timeout)
        try:
            frame = next(self._frames)
        except StopIteration:
            raise EndOfStream(f"{self.modality.value}/{self.sensor_id}: end of recording") from None
        self.stats.frames += 1
        return frame

    def _read_realtime(self, timeout: float | None) -> Frame:
        deadline = None if timeout is None else self._pacer.now() + timeout
        frame = self._held or self._next_looped()
        now = self._pacer.now()
        while frame.timestamp < now - self.config.buffer_s:  # overwritten in the device's buffer
            self.stats.dropped["overrun"] += 1
            frame = self._next_looped()
        if not self._pacer.wait(frame.timestamp, deadline=deadline):
            self._held = frame
            raise TimeoutError(
                f"{self.modality.value}/{self.sensor_id}: next frame due in {self._pacer.delay(frame.timestamp):.3f} s"
            )
        self._held = None
        self.stats.frames += 1
        return frame

    def _next_looped(self) -> Frame:
        """The stream's next frame on the wall clock; the first one is the next due from now."""
        if self._loop is None:
            now = self._pacer.now()
            loop = math.floor(now / self.period)
            self._loop = (loop, self._stream_frames())
            skip_before = now - loop * self.period  # seconds into the loop: earlier frames are past
        else:
            skip_before = -math.inf
        while True:
            loop, frames = self._loop
            for frame in frames:
                if frame.timestamp - self._start >= skip_before:
                    due = loop * self.period + (frame.timestamp - self._start)
                    index = loop * self._count + frame.index  # gaps still mean skipped frames
                    return dataclasses.replace(frame, timestamp=due, wall_time=due, index=index)
            self._loop = (loop + 1, self._stream_frames())
            skip_before = -math.inf

    def close(self) -> None:
        for frames in (self._frames, self._loop[1] if self._loop else None):
            if isinstance(frames, Generator):
                frames.close()  # releases the memory map
        self._frames, self._loop, self._reader = None, None, None


def loop_period(reader: RecordingReader) -> tuple[float, float]:
    """(period, start) of a recording replayed in a loop: from its first frame to one frame period
    past its last, over all streams (each stream's period from its frame count and span), so the
    next loop's first frames follow the last ones at their own rates."""
    streams = list(reader.sensors.values())
    if not streams or any(s.frames < 2 for s in streams):
        raise SourceError(f"{reader.directory}: a looped recording needs at least 2 frames per stream")
    start = min(s.start for s in streams)
    end = max(s.end + (s.end - s.start) / (s.frames - 1) for s in streams)
    return round(end - start, 6), start  # rounded: float noise would shift every loop a little


# The registry is keyed by (modality, backend): one small class per modality.
@register_source
class CameraRecordingSource(RecordingSource):
    modality = Modality.CAMERA


@register_source
class LidarRecordingSource(RecordingSource):
    modality = Modality.LIDAR


@register_source
class MicrophoneRecordingSource(RecordingSource):
    modality = Modality.MICROPHONE


def _shape_text(frame: Frame) -> str:
    if frame.modality is Modality.MICROPHONE:
        return f"{frame.sample_rate:g} Hz mono"
    if frame.modality is Modality.LIDAR:
        return "N x 4 float32"
    return "x".join(map(str, frame.data.shape)) + f" {frame.data.dtype}"


def _is_recording(path: Path) -> bool:
    return path.is_dir() and (path / MANIFEST).is_file()


@register_probe(_is_recording)
def probe_recording(path: Path) -> FileReport:
    """A recording directory, reported by its main stream (first in MODALITY_ORDER, then by id)."""
    reader = RecordingReader(path)
    if not reader.sensors:
        return _probe_samples(path, reader)
    main = min(reader.sensors, key=lambda sid: (MODALITY_ORDER.index(reader.sensors[sid].modality), sid))
    info = reader.sensors[main]
    first = next(iter(reader.frames(main)))
    samples = reader.manifest.samples
    return FileReport(
        path=str(path),
        modality=info.modality,
        backend="recording",
        frames=info.frames,
        start=info.start,
        end=info.end,
        shapes=_shape_text(first),
        details={
            "format": reader.manifest.format,
            "schema_version": reader.manifest.schema_version,
            "sensor_id": main,
            "sensors": {sid: s.model_dump(mode="json") for sid, s in reader.sensors.items()},
            "samples": 0 if samples is None else samples.count,
        },
    )


def _probe_samples(path: Path, reader: RecordingReader) -> FileReport:
    """A recording of fused samples only (what `fusion replay --out` writes)."""
    info = reader.manifest.samples
    if info is None:
        raise InputError(f"{path}: the recording holds neither sensor streams nor fused samples")
    first = next(iter(reader.samples()), None)
    segments = {} if first is None else first.segments
    present = [m for m in MODALITY_ORDER if m in segments]
    shapes = ", ".join(
        f"{m.value} {'x'.join(map(str, segments[m].grid or (segments[m].num_rows,)))}" for m in present
    )
    return FileReport(
        path=str(path),
        modality=present[0] if present else MODALITY_ORDER[0],
        backend="recording (fused samples)",
        frames=info.count,
        start=info.start,
        end=info.end,
        shapes=f"FusedSample: {shapes or 'no modality'}",
        details={"format": reader.manifest.format, "schema_version": reader.manifest.schema_version},
    )


def _is_stream_file(path: Path) -> bool:
    return path.is_file() and path.suffix in SUFFIX.values()


@register_probe(_is_stream_file)
def probe_stream_file(path: Path) -> FileReport:
    """One recorded sensor stream file (`.arrow` or `.parquet`)."""
    with StreamFile(path) as stream:
        check_schema(stream.schema, FRAMES, source=str(path))
        modality = schema_modality(stream.schema, source=str(path))
        first: Frame | None = None
        sensor_ids: set[str] = set()
        frames, start, end = 0, math.inf, -math.inf
        for i in range(stream.num_batches):
            batch = stream.read(i)
            if batch.num_rows == 0:
                continue
            if first is None:
                first = table_to_frames(batch.slice(0, 1), source=f"{path} batch {i}")[0]
            times = pc.min_max(batch.column("timestamp"))
            start, end = min(start, times["min"].as_py()), max(end, times["max"].as_py())
            sensor_ids.update(pc.unique(batch.column("sensor_id")).to_pylist())
            frames += batch.num_rows
    if first is None:
        raise InputError(f"{path}: the stream holds no frames")
    return FileReport(
        path=str(path),
        modality=modality,
        backend="recording",
        frames=frames,
        start=start,
        end=end,
        shapes=_shape_text(first),
        details={"sensor_ids": sorted(sensor_ids), "format": path.suffix[1:]},
    )
