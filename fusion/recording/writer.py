"""Writing a recording: frames (and FusedSamples) buffered per stream and written batch by batch,
`manifest.json` last."""

from __future__ import annotations

import json
import math
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.ipc as ipc
import pyarrow.parquet as pq

from fusion.errors import InputError, OutputExistsError
from fusion.recording.manifest import (
    MANIFEST,
    SAMPLES_STEM,
    SUFFIX,
    Format,
    Manifest,
    SamplesInfo,
    StreamInfo,
)
from fusion.sample import Frame, FusedSample, Modality
from fusion.schema import SCHEMA_VERSION, frame_schema, frames_to_table, sample_schema, samples_to_table

# Sensor ids become file names: no separators, no hidden files.
_SENSOR_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


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
        if format not in SUFFIX:
            raise InputError(f"format must be one of {sorted(SUFFIX)}, got {format!r}")
        if batch_frames < 1 or batch_bytes < 1:
            raise InputError(
                f"batch_frames ({batch_frames}) and batch_bytes ({batch_bytes}) must be positive"
            )
        self.directory = Path(directory)
        if (self.directory / MANIFEST).exists():
            raise OutputExistsError(f"{self.directory}: already holds a recording ({MANIFEST})")
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
        path = self.directory / f"{stem}{SUFFIX[self.format]}"
        if self.format == "parquet":
            return path, pq.ParquetWriter(str(path), schema)
        return path, ipc.new_file(str(path), schema)

    def write(self, frame: Frame) -> None:
        """Buffer one frame; a full buffer is written as one batch. Timestamps of a sensor must not go back."""
        if self._closed:
            raise InputError(f"{self.directory}: recording already closed")
        stream = self._streams.get(frame.sensor_id)
        if stream is None:
            if not _SENSOR_ID.fullmatch(frame.sensor_id) or frame.sensor_id == SAMPLES_STEM:
                raise InputError(
                    f"sensor_id {frame.sensor_id!r} cannot name a stream file "
                    f"(letters, digits, '.', '_', '-'; not {SAMPLES_STEM!r})"
                )
            path, writer = self._open(frame.sensor_id, frame_schema(frame.modality))
            stream = self._streams[frame.sensor_id] = _Stream(path, writer, frame.modality)
        elif frame.modality is not stream.modality:
            assert stream.modality is not None
            raise InputError(
                f"sensor {frame.sensor_id!r}: a {frame.modality.value} frame in a {stream.modality.value} stream"
            )
        if frame.timestamp < stream.end:
            raise InputError(
                f"sensor {frame.sensor_id!r}: timestamp {frame.timestamp} is before the previous {stream.end}"
            )
        self._add(stream, frame, frame.timestamp, frame.data.nbytes)

    def write_sample(self, sample: FusedSample) -> None:
        """Buffer one FusedSample for `samples.<format>`; its arrays must be float32 (stored losslessly)."""
        if self._closed:
            raise InputError(f"{self.directory}: recording already closed")
        # Checked here, not when the batch is written, so the error points at this sample.
        for modality, seg in sample.segments.items():
            for name, array in (("values", seg.values), ("positions", seg.positions)):
                if array is not None and array.dtype != np.float32:
                    raise InputError(
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
