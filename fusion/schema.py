"""The versioned Arrow schemas of `Frame` and `FusedSample`, and lossless conversion to and from them.

One schema serves recording, replay and transport between processes. Every table carries
`fusion.schema_version` (`SCHEMA_VERSION`) and `fusion.kind` (`frames` or `samples`) in its
schema metadata; reading reads every version in `READABLE_VERSIONS` and refuses any other,
naming the file. Version 2 added the samples' `objects` column: a version-1 samples table reads
with `objects` None (not labelled with objects); frames are the same in both versions.

Tensors use Arrow's canonical `arrow.variable_shape_tensor` extension type
(`fusion.arrow_tensor`), always, even where every row of a batch happens to have the same shape:
LiDAR point counts differ from sweep to sweep, and one type per column keeps the schema fixed,
so batches with different shapes share one file.

Frames: one table holds frames of one modality (the tensor dtype and rank depend on it:
camera uint8 [H, W, 3], microphone float32 [n], LiDAR float32 [N, 4]); `fusion.modality` in
the schema metadata says which. Recordings keep one file per sensor stream.

FusedSamples: one row per sample; per modality in `MODALITY_ORDER` a nullable struct column
(null: the modality is absent) with `values`, `positions` (tensors) and `grid`; `objects`: a
nullable list (null: not labelled with objects) of structs, one per `Box3D`, named as its
fields: `class_name`, `center`, `size`, `yaw`, `velocity` (float64: exact round trips),
`score` (null for ground truth), `track_id`.

Copies: writing concatenates each column's tensors into one buffer; reading gives read-only
views of the table's buffers (see `fusion.arrow_tensor`).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.ipc as ipc

from fusion.arrow_tensor import decode_tensors, encode_tensors, variable_shape_tensor
from fusion.detection.boxes import Box3D
from fusion.errors import InputError
from fusion.sample import MODALITY_ORDER, Frame, FusedSample, Modality, Segment, parse_modality

SCHEMA_VERSION = 2
READABLE_VERSIONS: tuple[int, ...] = (1, 2)  # the versions this build reads; it writes the last
_READABLE = ", ".join(str(v) for v in READABLE_VERSIONS)
VERSION_KEY = b"fusion.schema_version"
KIND_KEY = b"fusion.kind"
MODALITY_KEY = b"fusion.modality"
FRAMES = "frames"
SAMPLES = "samples"

# Native payload of each modality's Frame: (dtype, dimension names); the rank is len(names).
FRAME_LAYOUT: dict[Modality, tuple[np.dtype[Any], tuple[str, ...]]] = {
    Modality.CAMERA: (np.dtype(np.uint8), ("H", "W", "C")),
    Modality.LIDAR: (np.dtype(np.float32), ("N", "xyzi")),
    Modality.MICROPHONE: (np.dtype(np.float32), ("n",)),
}

# A fixed dictionary (every modality, always the same) so batches written one after another
# into one IPC file never replace it, which the IPC file format forbids.
_MODALITY_DICT = pa.array([m.value for m in MODALITY_ORDER], pa.string())
_MODALITY_TYPE = pa.dictionary(pa.int8(), pa.string())
_TIMES_TYPE = pa.map_(pa.string(), pa.float64())
_OBJECT_TYPE = pa.struct(
    [
        pa.field("class_name", pa.string()),
        pa.field("center", pa.list_(pa.float64(), 3)),
        pa.field("size", pa.list_(pa.float64(), 3)),
        pa.field("yaw", pa.float64()),
        pa.field("velocity", pa.list_(pa.float64(), 2)),
        pa.field("score", pa.float64()),
        pa.field("track_id", pa.string()),
    ]
)
_OBJECTS_TYPE = pa.list_(_OBJECT_TYPE)
_OBJECTS_SINCE = 2  # the schema version that added the samples' `objects` column


def _metadata(kind: str, **extra: str) -> dict[bytes, bytes]:
    meta = {VERSION_KEY: str(SCHEMA_VERSION).encode(), KIND_KEY: kind.encode()}
    meta.update({k.encode(): v.encode() for k, v in extra.items()})
    return meta


@functools.cache
def frame_schema(modality: Modality) -> pa.Schema:
    """The schema of a table of `modality` frames."""
    dtype, dims = FRAME_LAYOUT[modality]
    fields = [
        pa.field("modality", _MODALITY_TYPE, nullable=False),
        pa.field("sensor_id", pa.string(), nullable=False),
        pa.field("timestamp", pa.float64(), nullable=False),
        pa.field("wall_time", pa.float64(), nullable=False),
        pa.field("index", pa.int64(), nullable=False),
        pa.field("sample_rate", pa.float64()),
        pa.field("data", variable_shape_tensor(pa.from_numpy_dtype(dtype), dims), nullable=False),
    ]
    return pa.schema(fields, metadata=_metadata(FRAMES, **{"fusion.modality": modality.value}))


def _segment_type() -> pa.StructType:
    return pa.struct(
        [
            pa.field("values", variable_shape_tensor(pa.float32(), ("M", "c"))),
            pa.field("positions", variable_shape_tensor(pa.float32(), ("M", "d"))),
            pa.field("grid", pa.list_(pa.int32())),
        ]
    )


@functools.cache
def sample_schema() -> pa.Schema:
    """The schema of a table of FusedSamples."""
    fields = [
        pa.field("seq", pa.int64(), nullable=False),
        pa.field("timestamp", pa.float64(), nullable=False),
        pa.field("rig", pa.string(), nullable=False),
        pa.field("label", pa.int32()),
        # float64, not float32: the dataclass holds Python floats and round trips are lossless.
        pa.field("target_position", pa.list_(pa.float64(), 3)),
        pa.field("capture_times", _TIMES_TYPE, nullable=False),
        pa.field("stage_times", _TIMES_TYPE, nullable=False),
        *(pa.field(m.value, _segment_type()) for m in MODALITY_ORDER),
        pa.field("objects", _OBJECTS_TYPE),
    ]
    return pa.schema(fields, metadata=_metadata(SAMPLES))


def check_schema(schema: pa.Schema, kind: str, *, source: str) -> int:
    """The schema version of `schema`; raises ValueError naming `source` unless it is a version of
    `kind` that this build reads."""
    meta = schema.metadata or {}
    raw = meta.get(VERSION_KEY)
    if raw is None:
        raise InputError(
            f"{source}: no {VERSION_KEY.decode()} in the Arrow schema metadata, so it was not "
            f"written by fusion; this build reads {_READABLE}"
        )
    version = raw.decode(errors="replace")
    if version not in {str(v) for v in READABLE_VERSIONS}:
        raise InputError(
            f"{source}: recording written with schema version {version}; this build reads {_READABLE}"
        )
    found = meta.get(KIND_KEY, b"").decode(errors="replace")
    if found != kind:
        raise InputError(f"{source}: holds {found or 'unknown'!r} data, expected {kind!r}")
    return int(version)


def schema_modality(schema: pa.Schema, *, source: str) -> Modality:
    """The modality of a frames schema (after `check_schema`)."""
    raw = (schema.metadata or {}).get(MODALITY_KEY, b"").decode(errors="replace")
    try:
        return parse_modality(raw)
    except ValueError as err:
        raise InputError(f"{source}: {MODALITY_KEY.decode()}: {err}") from None


def _check_columns(schema: pa.Schema, expected: pa.Schema, *, source: str) -> None:
    for field in expected:
        idx = schema.get_field_index(field.name)
        if idx < 0:
            raise InputError(f"{source}: missing column {field.name!r}")
        actual = schema.field(idx).type
        if not actual.equals(field.type):
            raise InputError(f"{source}: column {field.name!r} has type {actual}, expected {field.type}")


def _check_no_nulls(batch: pa.RecordBatch, names: Sequence[str], *, source: str, first_row: int) -> None:
    for name in names:
        column = batch.column(name)
        if column.null_count:
            row = first_row + int(np.argmax(column.is_null().to_numpy(zero_copy_only=False)))
            raise InputError(f"{source}: column {name!r} row {row}: null where a value is required")


def _batches(table: pa.Table | pa.RecordBatch) -> list[pa.RecordBatch]:
    return [table] if isinstance(table, pa.RecordBatch) else table.to_batches()


# --- frames ------------------------------------------------------------------------------


def frames_to_table(frames: Sequence[Frame], *, modality: Modality | None = None) -> pa.Table:
    """Frames of one modality (several sensors allowed) -> a table of `frame_schema(modality)`.

    `modality` is needed only when `frames` is empty.
    """
    if modality is None:
        if not frames:
            raise InputError("frames_to_table: no frames and no modality: the schema depends on it")
        modality = frames[0].modality
    for row, f in enumerate(frames):
        if f.modality is not modality:
            raise InputError(
                f"frames_to_table: row {row} ({f.sensor_id!r}) is a {f.modality.value} frame in a "
                f"{modality.value} table; write each modality to its own table"
            )
    schema = frame_schema(modality)
    codes = pa.array(np.full(len(frames), MODALITY_ORDER.index(modality), dtype=np.int8))
    columns = [
        pa.DictionaryArray.from_arrays(codes, _MODALITY_DICT),
        pa.array([f.sensor_id for f in frames], pa.string()),
        pa.array(np.array([f.timestamp for f in frames], dtype=np.float64)),
        pa.array(np.array([f.wall_time for f in frames], dtype=np.float64)),
        pa.array(np.array([f.index for f in frames], dtype=np.int64)),
        pa.array([f.sample_rate for f in frames], pa.float64()),
        encode_tensors([f.data for f in frames], schema.field("data").type, column="data"),
    ]
    return pa.Table.from_arrays(columns, schema=schema)


def table_to_frames(table: pa.Table | pa.RecordBatch, *, source: str = "<table>") -> list[Frame]:
    """A frames table or record batch -> Frames whose `data` are read-only views of its buffers.

    Raises:
        ValueError: naming `source`, the column and the row, for a wrong version, column type,
            null, or a shape inconsistent with the data.
    """
    check_schema(table.schema, FRAMES, source=source)
    modality = schema_modality(table.schema, source=source)
    expected = frame_schema(modality)
    _check_columns(table.schema, expected, source=source)
    frames: list[Frame] = []
    for batch in _batches(table):
        frames.extend(_batch_to_frames(batch, modality, source=source, first_row=len(frames)))
    return frames


def _batch_to_frames(
    batch: pa.RecordBatch, modality: Modality, *, source: str, first_row: int
) -> list[Frame]:
    _check_no_nulls(
        batch,
        ("modality", "sensor_id", "timestamp", "wall_time", "index"),
        source=source,
        first_row=first_row,
    )
    names = batch.column("modality").to_pylist()
    for row, name in enumerate(names):
        if name != modality.value:
            raise InputError(
                f"{source}: column 'modality' row {first_row + row}: {name!r} in a {modality.value} table"
            )
    data = decode_tensors(
        batch.column("data"), np.ones(batch.num_rows, bool), column="data", source=source, first_row=first_row
    )
    sensor_ids = batch.column("sensor_id").to_pylist()
    timestamps = batch.column("timestamp").to_numpy().tolist()
    wall_times = batch.column("wall_time").to_numpy().tolist()
    indices = batch.column("index").to_numpy().tolist()
    rates = batch.column("sample_rate").to_pylist()
    frames = []
    for row in range(batch.num_rows):
        try:
            frames.append(
                Frame(
                    modality=modality,
                    sensor_id=sensor_ids[row],
                    timestamp=timestamps[row],
                    wall_time=wall_times[row],
                    data=data[row],  # type: ignore[arg-type]  # never None: every row is valid
                    sample_rate=rates[row],
                    index=indices[row],
                )
            )
        except ValueError as err:
            raise InputError(f"{source}: row {first_row + row}: {err}") from None
    return frames


# --- fused samples -----------------------------------------------------------------------


def _segments_column(segments: Sequence[Segment | None], modality: Modality) -> pa.StructArray:
    seg_type = _segment_type()
    name = modality.value
    values = encode_tensors(
        [None if s is None else s.values for s in segments],
        seg_type.field("values").type,
        column=f"{name}.values",
    )
    positions = encode_tensors(
        [None if s is None else s.positions for s in segments],
        seg_type.field("positions").type,
        column=f"{name}.positions",
    )
    grid = pa.array(
        [None if s is None or s.grid is None else list(s.grid) for s in segments], pa.list_(pa.int32())
    )
    absent = np.array([s is None for s in segments], dtype=bool)
    mask = pa.array(absent) if absent.any() else None
    return pa.StructArray.from_arrays([values, positions, grid], fields=list(seg_type), mask=mask)


def samples_to_table(samples: Sequence[FusedSample]) -> pa.Table:
    """FusedSamples -> a table of `sample_schema()`; a missing modality is a null struct."""
    schema = sample_schema()
    columns = [
        pa.array(np.array([s.seq for s in samples], dtype=np.int64)),
        pa.array(np.array([s.timestamp for s in samples], dtype=np.float64)),
        pa.array([s.rig for s in samples], pa.string()),
        pa.array([s.label for s in samples], pa.int32()),
        pa.array(
            [None if s.target_position is None else list(s.target_position) for s in samples],
            schema.field("target_position").type,
        ),
        pa.array([[(m.value, t) for m, t in s.capture_times.items()] for s in samples], _TIMES_TYPE),
        pa.array([list(s.stage_times.items()) for s in samples], _TIMES_TYPE),
        *(_segments_column([s.segments.get(m) for s in samples], m) for m in MODALITY_ORDER),
        pa.array([_object_rows(s.objects) for s in samples], _OBJECTS_TYPE),
    ]
    return pa.Table.from_arrays(columns, schema=schema)


def _object_rows(objects: list[Box3D] | None) -> list[dict[str, Any]] | None:
    return None if objects is None else [dataclasses.asdict(box) for box in objects]


def table_to_samples(table: pa.Table | pa.RecordBatch, *, source: str = "<table>") -> list[FusedSample]:
    """A samples table or record batch -> FusedSamples (tensors are read-only views of its buffers).

    Raises:
        ValueError: naming `source`, the column and the row, for a wrong version, column type,
            null, unknown modality, or a shape inconsistent with the data.
    """
    version = check_schema(table.schema, SAMPLES, source=source)
    expected = sample_schema()
    if version < _OBJECTS_SINCE:
        expected = expected.remove(expected.get_field_index("objects"))
    _check_columns(table.schema, expected, source=source)
    samples: list[FusedSample] = []
    for batch in _batches(table):
        samples.extend(_batch_to_samples(batch, source=source, first_row=len(samples)))
    return samples


def _batch_to_objects(batch: pa.RecordBatch, *, source: str, first_row: int) -> list[list[Box3D] | None]:
    """The `objects` column of a batch (all None in a table written before it existed)."""
    if "objects" not in batch.schema.names:
        return [None] * batch.num_rows
    out: list[list[Box3D] | None] = []
    for row, objects in enumerate(batch.column("objects").to_pylist()):
        try:
            out.append(None if objects is None else [Box3D(**o) for o in objects])
        except ValueError as err:
            raise InputError(f"{source}: column 'objects' row {first_row + row}: {err}") from None
    return out


def _batch_to_segments(
    batch: pa.RecordBatch, modality: Modality, *, source: str, first_row: int
) -> list[Segment | None]:
    name = modality.value
    column = batch.column(name)
    present = ~column.is_null().to_numpy(zero_copy_only=False)
    values = decode_tensors(
        column.field("values"), present, column=f"{name}.values", source=source, first_row=first_row
    )
    positions = decode_tensors(
        column.field("positions"), present, column=f"{name}.positions", source=source, first_row=first_row
    )
    grids = column.field("grid").to_pylist()
    segments: list[Segment | None] = []
    for row in range(batch.num_rows):
        if not present[row]:
            segments.append(None)
            continue
        v = values[row]
        if v is None:
            raise InputError(
                f"{source}: column '{name}.values' row {first_row + row}: null in a present segment"
            )
        grid = grids[row]
        try:
            segments.append(Segment(v, positions[row], None if grid is None else tuple(grid)))
        except ValueError as err:
            raise InputError(f"{source}: column {name!r} row {first_row + row}: {err}") from None
    return segments


def _times(pairs: list[tuple[str, float]] | None) -> dict[str, float]:
    return dict(pairs or [])


def _batch_to_samples(batch: pa.RecordBatch, *, source: str, first_row: int) -> list[FusedSample]:
    _check_no_nulls(
        batch, ("seq", "timestamp", "rig", "capture_times", "stage_times"), source=source, first_row=first_row
    )
    seqs = batch.column("seq").to_numpy().tolist()
    timestamps = batch.column("timestamp").to_numpy().tolist()
    rigs = batch.column("rig").to_pylist()
    labels = batch.column("label").to_pylist()
    targets = batch.column("target_position").to_pylist()
    captures = batch.column("capture_times").to_pylist()
    stages = batch.column("stage_times").to_pylist()
    segments = {m: _batch_to_segments(batch, m, source=source, first_row=first_row) for m in MODALITY_ORDER}
    objects = _batch_to_objects(batch, source=source, first_row=first_row)
    samples = []
    for row in range(batch.num_rows):
        try:
            capture_times = {parse_modality(k): t for k, t in _times(captures[row]).items()}
        except ValueError as err:
            raise InputError(f"{source}: column 'capture_times' row {first_row + row}: {err}") from None
        target = targets[row]
        samples.append(
            FusedSample(
                seq=seqs[row],
                timestamp=timestamps[row],
                segments={m: seg for m in MODALITY_ORDER if (seg := segments[m][row]) is not None},
                rig=rigs[row],
                capture_times=capture_times,
                stage_times=_times(stages[row]),
                label=labels[row],
                target_position=None if target is None else (target[0], target[1], target[2]),
                objects=objects[row],
            )
        )
    return samples


# --- transport ---------------------------------------------------------------------------


def serialize_sample(sample: FusedSample) -> bytes:
    """One FusedSample as an Arrow IPC stream (schema + one one-row batch)."""
    table = samples_to_table([sample])
    sink = pa.BufferOutputStream()
    with ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return bytes(sink.getvalue().to_pybytes())


def deserialize_sample(data: bytes | pa.Buffer) -> FusedSample:
    """Inverse of `serialize_sample`; its arrays are read-only views of `data`.

    Raises:
        ValueError: when `data` is not one serialized FusedSample of this schema version.
    """
    source = "<serialized sample>"
    try:
        table = ipc.open_stream(pa.py_buffer(data)).read_all()
        table.validate(full=True)
    except (pa.ArrowException, OSError) as err:
        raise InputError(f"{source}: not an Arrow IPC stream of a FusedSample ({err})") from None
    samples = table_to_samples(table, source=source)
    if len(samples) != 1:
        raise InputError(f"{source}: holds {len(samples)} samples, expected 1")
    return samples[0]
