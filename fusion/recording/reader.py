"""Reading a recording: batch by batch through a memory map, streams merged in timestamp order,
and `Replayer`, which paces the frames on a clock."""

from __future__ import annotations

import heapq
import time
from collections.abc import Callable, Generator, Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.ipc as ipc
import pyarrow.parquet as pq

from fusion.clock import Pacer, check_speed
from fusion.errors import InputError, MissingFileError
from fusion.recording.manifest import MANIFEST, StreamInfo, load_manifest
from fusion.sample import Frame, FusedSample, Modality
from fusion.schema import (
    FRAMES,
    SAMPLES,
    check_schema,
    schema_modality,
    table_to_frames,
    table_to_samples,
)


class StreamFile:
    """Batch-by-batch access to one Arrow IPC (memory-mapped) or Parquet file.

    Open errors are ValueError / OSError naming the file.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        if not path.is_file():
            raise MissingFileError(f"{path}: no such stream file")
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
            raise InputError(
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
            raise InputError(f"{self.path}: batch {i} is corrupt: {err}") from None
        return batch

    def num_rows(self) -> int:
        """Rows in the file, from metadata (IPC: batch headers in the map; no frame is read)."""
        try:
            if self._parquet is not None:
                return int(self._parquet.metadata.num_rows)
            assert self._ipc is not None
            return int(self._ipc.count_rows())
        except (pa.ArrowException, OSError) as err:
            raise InputError(f"{self.path}: corrupt batch headers: {err}") from None

    def close(self) -> None:
        if self._parquet is not None:
            self._parquet.close()
        if self._map is not None:
            self._map.close()

    def __enter__(self) -> StreamFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


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
            raise MissingFileError(f"{self.directory}: no such recording directory")
        if not path.is_file():
            raise MissingFileError(f"{self.directory}: not a recording (no {MANIFEST})")
        self.manifest = load_manifest(path)
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
            raise MissingFileError(f"{path}: file of {what}, listed in {MANIFEST}, is missing")
        with StreamFile(path) as stream:
            check_schema(stream.schema, kind, source=str(path))
            if modality is not None and schema_modality(stream.schema, source=str(path)) is not modality:
                raise InputError(f"{path}: {MANIFEST} says {modality.value}, the file holds another modality")
            found = stream.num_rows()
        if found != rows:
            raise InputError(f"{path}: {MANIFEST} lists {rows} rows, the file holds {found} (truncated?)")

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
        with StreamFile(path) as stream:
            for i in range(stream.num_batches):
                try:
                    rows = convert(stream.read(i), source=f"{path} batch {i}")
                except ValueError as err:
                    if on_error is None:
                        raise
                    on_error(str(err))
                    continue
                yield from rows


class Replayer:
    """Replays a recording's frames, paced on a clock (`fusion.clock.Pacer`).

    Frame k is yielded no earlier than `start + (t_k - t_0) / speed`, where `start` is the
    clock when the first frame is yielded: `speed` 1.0 is real time, 2.0 twice as fast, None as
    fast as possible. A slow consumer is never caught up by skipping: replay is lossless.
    Every iteration re-reads the recording, yields the same frames, and starts a new clock.
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
        self.reader = reader
        self.speed = check_speed(speed)
        self.sensor_id = sensor_id
        self._clock = clock
        self._sleep = sleep

    def __iter__(self) -> Iterator[Frame]:
        pacer = Pacer(self.speed, clock=self._clock, sleep=self._sleep)
        for frame in self.reader.frames(self.sensor_id):
            pacer.wait(frame.timestamp)
            yield frame
