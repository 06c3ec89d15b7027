"""Recording and replay of sensor streams as Arrow IPC or Parquet files.

A recording is a directory:

```
manifest.json        schema version, format, creation time, one entry per sensor stream
<sensor_id>.arrow    that sensor's frames (Arrow IPC file; `.parquet` for Parquet)
samples.arrow        optional: FusedSamples (`RecordingWriter.write_sample`)
```

Each stream file holds the `fusion.schema.frame_schema` of its modality, written in record
batches (Parquet: row groups) of at most `batch_frames` frames or about `batch_bytes` bytes,
so writing holds at most one batch per stream in memory. Reading goes batch by batch through
a memory map: an Arrow IPC recording is read without copying its frames.

`RecordingReader.frames()` merges the streams in timestamp order, `Replayer` paces them to
(a multiple of) real time, and the `recording` source backend replays one stream like any
sensor.
"""

from __future__ import annotations

import heapq
import json
import math
import os
import re
import time
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.ipc as ipc
import pyarrow.parquet as pq

from fusion.config import ModalityKey, StrictModel, parse_config
from fusion.sample import MODALITY_ORDER, Frame, FusedSample, Modality
from fusion.schema import (
    FRAMES,
    SAMPLES,
    SCHEMA_VERSION,
    check_schema,
    frame_schema,
    frames_to_table,
    sample_schema,
    samples_to_table,
    schema_modality,
    table_to_frames,
    table_to_samples,
)
from fusion.sensors.registry import FileReport, register_probe, register_source
from fusion.sensors.source import EndOfStream, Source, SourceConfig, SourceError

MANIFEST = "manifest.json"
SAMPLES_STEM = "samples"
Format = Literal["arrow", "parquet"]
_SUFFIX: dict[str, str] = {"arrow": ".arrow", "parquet": ".parquet"}
# Sensor ids become file names: no separators, no hidden files.
_SENSOR_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


# --- manifest ----------------------------------------------------------------------------


class StreamInfo(StrictModel):
    """One sensor stream of a recording."""

    modality: ModalityKey
    file: str  # file name inside the recording directory
    frames: int
    start: float  # first timestamp, seconds
    end: float  # last timestamp, seconds


class SamplesInfo(StrictModel):
    """The FusedSamples of a recording."""

    file: str
    count: int
    start: float
    end: float


class Manifest(StrictModel):
    """`manifest.json`: written last, when the recording is closed."""

    schema_version: int
    format: Format
    created_wall_time: float  # Unix seconds when the recording was started
    sensors: dict[str, StreamInfo]
    samples: SamplesInfo | None = None


# --- stream files ------------------------------------------------------------------------


class _StreamFile:
    """Batch-by-batch access to one Arrow IPC (memory-mapped) or Parquet file.

    Open errors are ValueError / OSError naming the file.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such stream file")
        self._ipc: ipc.RecordBatchFileReader | None = None
        self._parquet: pq.ParquetFile | None = None
        self._map: pa.MemoryMappedFile | None = None
        try:
            if path.suffix == ".parquet":
                self._parquet = pq.ParquetFile(path, memory_map=True)
                self.schema = self._parquet.schema_arrow
                self.num_batches = self._parquet.num_row_groups
            else:
                self._map = pa.memory_map(str(path))
                self._ipc = ipc.open_file(self._map)
                self.schema = self._ipc.schema
                self.num_batches = self._ipc.num_record_batches
        except (pa.ArrowException, OSError) as err:
            self.close()
            raise ValueError(
                f"{path}: not a readable {path.suffix[1:]} file (truncated or corrupt?): {err}"
            ) from None

    def read(self, i: int) -> pa.RecordBatch | pa.Table:
        """Batch `i`, structurally validated; ValueError naming the file and batch when corrupt."""
        try:
            if self._parquet is not None:
                batch: pa.RecordBatch | pa.Table = self._parquet.read_row_group(i)
            else:
                assert self._ipc is not None
                batch = self._ipc.get_batch(i)
            batch.validate(full=True)
        except (pa.ArrowException, OSError) as err:
            raise ValueError(f"{self.path}: batch {i} is corrupt: {err}") from None
        return batch

    def num_rows(self) -> int:
        """Rows in the file, from metadata (IPC: batch headers in the map; no frame is read)."""
        try:
            if self._parquet is not None:
                return int(self._parquet.metadata.num_rows)
            assert self._ipc is not None
            return int(self._ipc.count_rows())
        except (pa.ArrowException, OSError) as err:
            raise ValueError(f"{self.path}: corrupt batch headers: {err}") from None

    def close(self) -> None:
        if self._parquet is not None:
            self._parquet.close()
        if self._map is not None:
            self._map.close()

    def __enter__(self) -> _StreamFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# --- writing -----------------------------------------------------------------------------


@dataclass
class _Stream:
    """Buffered rows and the open file writer of one stream."""

    path: Path
    writer: Any  # ipc.RecordBatchFileWriter or pq.ParquetWriter
    modality: Modality | None = None  # None for the samples stream
    buffer: list[Any] = field(default_factory=list)
    buffered_bytes: int = 0
    count: int = 0
    start: float = math.inf
    end: float = -math.inf


class RecordingWriter:
    """Writes frames (and optionally FusedSamples) to a recording directory.

    Memory is bounded: each stream buffers at most `batch_frames` rows (or about `batch_bytes`
    bytes) before they are written as one record batch. `close()` writes the last batches,
    finalizes the files and writes `manifest.json`; until then the recording is incomplete.
    """

    def __init__(
        self,
        directory: str | Path,
        *,
        format: Format = "arrow",
        batch_frames: int = 64,
        batch_bytes: int = 32 * 2**20,
    ) -> None:
        if format not in _SUFFIX:
            raise ValueError(f"format must be one of {sorted(_SUFFIX)}, got {format!r}")
        if batch_frames < 1 or batch_bytes < 1:
            raise ValueError(
                f"batch_frames ({batch_frames}) and batch_bytes ({batch_bytes}) must be positive"
            )
        self.directory = Path(directory)
        if (self.directory / MANIFEST).exists():
            raise FileExistsError(f"{self.directory}: already holds a recording ({MANIFEST})")
        self.directory.mkdir(parents=True, exist_ok=True)
        self.format = format
        self.batch_frames = batch_frames
        self.batch_bytes = batch_bytes
        self.created_wall_time = time.time()
        self._streams: dict[str, _Stream] = {}
        self._samples: _Stream | None = None
        self._closed = False

    @property
    def buffered(self) -> int:
        """Rows held in memory, not yet written, over all streams."""
        streams = [*self._streams.values(), *([self._samples] if self._samples else [])]
        return sum(len(s.buffer) for s in streams)

    def _open(self, stem: str, schema: pa.Schema) -> tuple[Path, Any]:
        path = self.directory / f"{stem}{_SUFFIX[self.format]}"
        if self.format == "parquet":
            return path, pq.ParquetWriter(str(path), schema)
        return path, ipc.new_file(str(path), schema)

    def write(self, frame: Frame) -> None:
        """Buffer one frame; a full buffer is written as one batch. Timestamps of a sensor must not go back."""
        if self._closed:
            raise ValueError(f"{self.directory}: recording already closed")
        stream = self._streams.get(frame.sensor_id)
        if stream is None:
            if not _SENSOR_ID.fullmatch(frame.sensor_id) or frame.sensor_id == SAMPLES_STEM:
                raise ValueError(
                    f"sensor_id {frame.sensor_id!r} cannot name a stream file "
                    f"(letters, digits, '.', '_', '-'; not {SAMPLES_STEM!r})"
                )
            path, writer = self._open(frame.sensor_id, frame_schema(frame.modality))
            stream = self._streams[frame.sensor_id] = _Stream(path, writer, frame.modality)
        elif frame.modality is not stream.modality:
            assert stream.modality is not None
            raise ValueError(
                f"sensor {frame.sensor_id!r}: a {frame.modality.value} frame in a {stream.modality.value} stream"
            )
        if frame.timestamp < stream.end:
            raise ValueError(
                f"sensor {frame.sensor_id!r}: timestamp {frame.timestamp} is before the previous {stream.end}"
            )
        self._add(stream, frame, frame.timestamp, frame.data.nbytes)

    def write_sample(self, sample: FusedSample) -> None:
        """Buffer one FusedSample for `samples.<format>`; its arrays must be float32 (stored losslessly)."""
        if self._closed:
            raise ValueError(f"{self.directory}: recording already closed")
        # Checked here, not when the batch is written, so the error points at this sample.
        for modality, seg in sample.segments.items():
            for name, array in (("values", seg.values), ("positions", seg.positions)):
                if array is not None and array.dtype != np.float32:
                    raise ValueError(
                        f"sample {sample.seq}: {modality.value} {name} must be float32, got {array.dtype}"
                    )
        if self._samples is None:
            path, writer = self._open(SAMPLES_STEM, sample_schema())
            self._samples = _Stream(path, writer)
        nbytes = sum(
            s.values.nbytes + (0 if s.positions is None else s.positions.nbytes)
            for s in sample.segments.values()
        )
        self._add(self._samples, sample, sample.timestamp, nbytes)

    def _add(self, stream: _Stream, row: Frame | FusedSample, timestamp: float, nbytes: int) -> None:
        stream.buffer.append(row)
        stream.buffered_bytes += nbytes
        stream.count += 1
        stream.start = min(stream.start, timestamp)
        stream.end = max(stream.end, timestamp)
        if len(stream.buffer) >= self.batch_frames or stream.buffered_bytes >= self.batch_bytes:
            self._flush(stream)

    def _flush(self, stream: _Stream) -> None:
        if not stream.buffer:
            return
        if stream.modality is None:
            table = samples_to_table(stream.buffer)
        else:
            table = frames_to_table(stream.buffer, modality=stream.modality)
        # One batch (Parquet: one row group) per flush, whatever the row count.
        if self.format == "parquet":
            stream.writer.write_table(table, row_group_size=max(table.num_rows, 1))
        else:
            stream.writer.write_table(table, max_chunksize=max(table.num_rows, 1))
        stream.buffer.clear()
        stream.buffered_bytes = 0

    def close(self) -> None:
        """Write what is buffered, finalize every file, then the manifest. Idempotent."""
        if self._closed:
            return
        self._closed = True
        streams = [*self._streams.values(), *([self._samples] if self._samples else [])]
        for stream in streams:
            self._flush(stream)
            stream.writer.close()
        manifest = Manifest(
            schema_version=SCHEMA_VERSION,
            format=self.format,
            created_wall_time=self.created_wall_time,
            sensors={
                sid: StreamInfo(
                    modality=s.modality, file=s.path.name, frames=s.count, start=s.start, end=s.end
                )
                for sid, s in sorted(self._streams.items())
                if s.modality is not None
            },
            samples=None
            if self._samples is None
            else SamplesInfo(
                file=self._samples.path.name,
                count=self._samples.count,
                start=self._samples.start,
                end=self._samples.end,
            ),
        )
        # Written last and atomically: a manifest means the files it lists are complete.
        tmp = self.directory / f".{MANIFEST}.tmp"
        tmp.write_text(json.dumps(manifest.model_dump(mode="json"), indent=2) + "\n")
        os.replace(tmp, self.directory / MANIFEST)

    def __enter__(self) -> RecordingWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# --- reading -----------------------------------------------------------------------------

OnError = Callable[[str], None]


class RecordingReader:
    """Reads a recording directory; every file is checked when the reader is made.

    Raises (from the constructor):
        FileNotFoundError: the directory, its manifest or a stream file is missing (named).
        ValueError: a manifest or file that is corrupt, truncated, of another schema version,
            or disagrees with the manifest (the message names the file).
    """

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)
        path = self.directory / MANIFEST
        if not self.directory.is_dir():
            raise FileNotFoundError(f"{self.directory}: no such recording directory")
        if not path.is_file():
            raise FileNotFoundError(f"{self.directory}: not a recording (no {MANIFEST})")
        self.manifest = _load_manifest(path)
        for sensor_id, info in self.manifest.sensors.items():
            self._check_file(info.file, FRAMES, info.frames, info.modality, what=f"sensor {sensor_id!r}")
        if self.manifest.samples is not None:
            self._check_file(
                self.manifest.samples.file, SAMPLES, self.manifest.samples.count, None, what="samples"
            )

    @property
    def sensors(self) -> dict[str, StreamInfo]:
        """Sensor id -> its stream's modality, frame count, time span and file."""
        return dict(self.manifest.sensors)

    def _path(self, name: str) -> Path:
        return self.directory / name

    def _check_file(self, name: str, kind: str, rows: int, modality: Modality | None, *, what: str) -> None:
        path = self._path(name)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: file of {what}, listed in {MANIFEST}, is missing")
        with _StreamFile(path) as stream:
            check_schema(stream.schema, kind, source=str(path))
            if modality is not None and schema_modality(stream.schema, source=str(path)) is not modality:
                raise ValueError(f"{path}: {MANIFEST} says {modality.value}, the file holds another modality")
            found = stream.num_rows()
        if found != rows:
            raise ValueError(f"{path}: {MANIFEST} lists {rows} rows, the file holds {found} (truncated?)")

    def frames(self, sensor_id: str | None = None, *, on_error: OnError | None = None) -> Iterator[Frame]:
        """Frames of one sensor, or of all sensors merged by (timestamp, sensor id, index).

        Reads one batch per stream at a time. A corrupt batch raises ValueError naming the file
        and batch, or, with `on_error`, is reported to it and skipped.
        """
        if sensor_id is not None:
            if sensor_id not in self.manifest.sensors:
                known = ", ".join(sorted(self.manifest.sensors))
                raise KeyError(f"{self.directory}: no sensor {sensor_id!r} (recorded: {known})")
            return self._rows(self.manifest.sensors[sensor_id].file, table_to_frames, on_error)
        streams = [
            self._rows(info.file, table_to_frames, on_error)
            for _, info in sorted(self.manifest.sensors.items())
        ]
        # Every stream is in timestamp order; merge() is stable, so equal keys keep stream order.
        return heapq.merge(*streams, key=lambda f: (f.timestamp, f.sensor_id, f.index))

    def samples(self, *, on_error: OnError | None = None) -> Iterator[FusedSample]:
        """The recorded FusedSamples in the order written (none when there are none)."""
        if self.manifest.samples is None:
            return iter(())
        return self._rows(self.manifest.samples.file, table_to_samples, on_error)

    def _rows(
        self, name: str, convert: Callable[..., list[Any]], on_error: OnError | None
    ) -> Generator[Any, None, None]:
        path = self._path(name)
        with _StreamFile(path) as stream:
            for i in range(stream.num_batches):
                try:
                    rows = convert(stream.read(i), source=f"{path} batch {i}")
                except ValueError as err:
                    if on_error is None:
                        raise
                    on_error(str(err))
                    continue
                yield from rows


def _load_manifest(path: Path) -> Manifest:
    try:
        raw = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{path}: not valid JSON: {err}") from None
    version = raw.get("schema_version") if isinstance(raw, dict) else None
    if version != SCHEMA_VERSION:
        raise ValueError(
            f"{path}: recording written with schema version {version}; this build reads {SCHEMA_VERSION}"
        )
    manifest = parse_config(Manifest, raw, source=str(path))
    names = [info.file for info in manifest.sensors.values()]
    if manifest.samples is not None:
        names.append(manifest.samples.file)
    for name in names:
        if Path(name).name != name or name.startswith("."):
            raise ValueError(f"{path}: file {name!r} is not a plain file name in the recording directory")
    return manifest


# --- replay ------------------------------------------------------------------------------


class Replayer:
    """Replays a recording's frames, paced on a clock.

    Frame k is yielded no earlier than `start + (t_k - t_0) / speed`, where `start` is the
    clock when the first frame is yielded: `speed` 1.0 is real time, 2.0 twice as fast, None as
    fast as possible. A slow consumer is never caught up by skipping: replay is lossless.
    Every iteration re-reads the recording and yields the same frames.
    """

    def __init__(
        self,
        reader: RecordingReader,
        *,
        speed: float | None,
        sensor_id: str | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if speed is not None and not (math.isfinite(speed) and speed > 0):
            raise ValueError(f"speed must be a positive number or None, got {speed}")
        self.reader = reader
        self.speed = speed
        self.sensor_id = sensor_id
        self._clock = clock
        self._sleep = sleep

    def __iter__(self) -> Iterator[Frame]:
        start = t0 = 0.0
        for k, frame in enumerate(self.reader.frames(self.sensor_id)):
            if k == 0:
                start, t0 = self._clock(), frame.timestamp
            elif self.speed is not None:
                delay = start + (frame.timestamp - t0) / self.speed - self._clock()
                if delay > 0:
                    self._sleep(delay)
            yield frame


# --- source backend ----------------------------------------------------------------------


class RecordingSourceConfig(SourceConfig):
    """Replay one stream of a recording as a sensor.

    `sensor_id` picks the stream; empty: the recording's only stream of this modality.
    """

    path: str  # the recording directory (holds manifest.json)


class RecordingSource(Source):
    """A finite source over one recorded stream: never waits on a clock (pace with `Replayer`).

    A corrupt batch is skipped and counted under `stats.errors["corrupt_batch"]`; the
    stream goes on with the next batch.
    """

    backend = "recording"
    config_cls = RecordingSourceConfig

    def __init__(self, config: SourceConfig) -> None:
        super().__init__(config)
        assert isinstance(config, RecordingSourceConfig)
        self.config: RecordingSourceConfig = config
        self._frames: Iterator[Frame] | None = None

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
        self._frames = reader.frames(stream_id, on_error=lambda msg: self.skip("corrupt_batch", msg))

    def read(self, timeout: float | None = None) -> Frame:
        """The next recorded frame; never blocks on a clock. EndOfStream after the last."""
        if self._frames is None:
            raise SourceError(f"{self.modality.value}/{self.sensor_id}: read() before open()")
        try:
            frame = next(self._frames)
        except StopIteration:
            raise EndOfStream(f"{self.modality.value}/{self.sensor_id}: end of recording") from None
        self.stats.frames += 1
        return frame

    def close(self) -> None:
        if isinstance(self._frames, Generator):
            self._frames.close()  # releases the memory map
        self._frames = None


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


# --- probes ------------------------------------------------------------------------------


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
        raise ValueError(f"{path}: the recording holds neither sensor streams nor fused samples")
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
    return path.is_file() and path.suffix in _SUFFIX.values()


@register_probe(_is_stream_file)
def probe_stream_file(path: Path) -> FileReport:
    """One recorded sensor stream file (`.arrow` or `.parquet`)."""
    with _StreamFile(path) as stream:
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
        raise ValueError(f"{path}: the stream holds no frames")
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
