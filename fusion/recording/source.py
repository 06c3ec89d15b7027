"""The `recording` source backend (one recorded stream replayed as a sensor) and the probes that
describe a recording directory or one of its stream files for `fusion inspect`."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Generator, Iterator
from pathlib import Path

import pyarrow.compute as pc

from fusion.clock import DeviceBuffer
from fusion.errors import InputError, SourceError
from fusion.recording.manifest import MANIFEST, SUFFIX
from fusion.recording.reader import RecordingReader, StreamFile
from fusion.sample import MODALITY_ORDER, Frame, Modality
from fusion.schema import FRAMES, check_schema, schema_modality, table_to_frames
from fusion.sensors.recording_config import RECORDING, RecordingSourceConfig
from fusion.sensors.registry import FileReport, register_probe
from fusion.sensors.source import EndOfStream, Source


class RecordingSource(Source):
    """A finite source over one recorded stream: never waits on a clock (pace with `Replayer`).

    Serves every modality: the stream read is the recording's stream of the source's modality.
    A corrupt batch is skipped and counted under `stats.errors["corrupt_batch"]`; the
    stream goes on with the next batch.

    With `realtime` it is an endless live source: the recording repeats every `period` seconds
    (its streams' common span, one frame period past the last frame, so loops join seamlessly)
    on a grid anchored at Unix time 0, a frame recorded `r` seconds after the recording's start
    is due at `k * period + r`, and `read(timeout)` blocks until the next frame is due, as a
    device does (`fusion.clock.DeviceBuffer`). The first read joins the loop at the present; a
    reader more than `buffer_s` behind skips the frames a device's buffer would have overwritten.
    """

    backend = RECORDING
    config: RecordingSourceConfig

    def __init__(self, config: RecordingSourceConfig, *, modality: Modality | None = None) -> None:
        super().__init__(config, modality=modality)
        self._frames: Iterator[Frame] | None = None
        self._reader: RecordingReader | None = None
        # Realtime: the looped stream the device buffer hands over (frame times are Unix times),
        # the loop's period and the recording's start.
        self._buffer: DeviceBuffer[Frame] = DeviceBuffer(buffer_s=config.buffer_s, on_overrun=self._overrun)
        self._looping: Generator[tuple[float, Frame]] | None = None
        self.period = 0.0
        self._start = 0.0
        self._count = 0

    def _overrun(self, lost: int) -> None:
        self.stats.dropped["overrun"] += lost

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
            self._buffer.stop()

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
        buffer = self._buffer
        deadline = buffer.deadline(timeout)
        if not buffer.streaming:
            self._looping = self._looped()
            buffer.start(self._looping)
        handed = buffer.next()
        assert handed is not None, "a looped recording never ends"
        due, frame = handed
        buffer.hand_over(due, deadline=deadline, what=f"{self.modality.value}/{self.sensor_id}")
        self.stats.frames += 1
        return frame

    def _looped(self) -> Generator[tuple[float, Frame]]:
        """(due time, frame) of the stream looped on the wall clock, restamped to its due time;
        from the first frame due at or after the moment it is first asked for."""
        now = self._buffer.pacer.now()
        loop = math.floor(now / self.period)
        skip_before = now - loop * self.period  # seconds into the loop: earlier frames are past
        while True:
            frames = self._stream_frames()
            try:
                for frame in frames:
                    if frame.timestamp - self._start >= skip_before:
                        due = loop * self.period + (frame.timestamp - self._start)
                        index = loop * self._count + frame.index  # gaps still mean skipped frames
                        yield due, dataclasses.replace(frame, timestamp=due, wall_time=due, index=index)
            finally:
                if isinstance(frames, Generator):
                    frames.close()  # releases the memory map
            loop, skip_before = loop + 1, -math.inf

    def close(self) -> None:
        if isinstance(self._frames, Generator):
            self._frames.close()  # releases the memory map
        if self._looping is not None:
            self._looping.close()
        self._buffer.stop()
        self._frames, self._looping, self._reader = None, None, None


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
