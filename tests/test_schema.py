"""The Arrow schemas of Frame and FusedSample: lossless round trips, versions, validation, zero copy."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.ipc as ipc
import pyarrow.parquet as pq
import pytest

from fusion.detection.boxes import Box3D
from fusion.sample import MODALITY_ORDER, Frame, FusedSample, Modality, Segment
from fusion.schema import (
    SCHEMA_VERSION,
    VERSION_KEY,
    deserialize_sample,
    frame_schema,
    frames_to_table,
    sample_schema,
    samples_to_table,
    serialize_sample,
    table_to_frames,
    table_to_samples,
)

BASE_T = 1_712_345_678.123456789  # a timestamp that float32 or decimal printing would not keep
DATA = Path(__file__).parent / "data"


def make_objects(seq: int) -> list[Box3D] | None:
    """None (not labelled with objects), [] (known empty), or 1..3 boxes with values float32
    would not keep, ground truth (no score) and predictions mixed, with and without track ids."""
    if seq % 4 == 0:
        return None
    return [
        Box3D(
            class_name=("car", "pedestrian", "truck")[k],
            center=(BASE_T / 1e8 + k, -2.0 / 3.0, -1.7 + 1e-9 * seq),
            size=(4.4 + 0.1 * k, 1.8, 1.0 / 3.0),
            yaw=-3.141592653589793 + 0.1 * seq,
            velocity=(0.1 * seq, -1e-12),
            score=None if k % 2 == 0 else 0.123456789,
            track_id=None if k == 2 else f"{seq}-{k}",
        )
        for k in range(seq % 4 - 1)
    ]


def make_segment(modality: Modality, rng: np.random.Generator, points: int = 37) -> Segment:
    if modality is Modality.CAMERA:
        return Segment(rng.random((8 * 6, 3), dtype=np.float32), grid=(8, 6))
    if modality is Modality.MICROPHONE:
        return Segment(rng.standard_normal((5 * 4, 1), dtype=np.float32), grid=(5, 4))
    return Segment(
        rng.random((points, 2), dtype=np.float32),
        positions=rng.uniform(-1, 1, (points, 3)).astype(np.float32),
    )


def make_samples(rng: np.random.Generator) -> list[FusedSample]:
    """One sample per subset of modalities (the empty one included), LiDAR sizes all different."""
    subsets = [c for r in range(len(MODALITY_ORDER) + 1) for c in itertools.combinations(MODALITY_ORDER, r)]
    samples = []
    for seq, present in enumerate(subsets):
        samples.append(
            FusedSample(
                seq=seq,
                timestamp=BASE_T + seq / 7,
                segments={m: make_segment(m, rng, points=3 + 11 * seq) for m in present},
                rig="rig-a" if seq % 2 else "rig0",
                capture_times={m: BASE_T + seq / 7 - 0.013 * (i + 1) for i, m in enumerate(present)},
                stage_times={"sync": BASE_T + 0.1 * seq, "fuse": BASE_T + 0.1 * seq + 1e-6}
                if seq % 3
                else {},
                label=None if seq % 2 else seq,
                target_position=None if seq % 3 == 0 else (0.1 * seq, -2.5, 1e-7 * seq),
                objects=make_objects(seq),
            )
        )
    return samples


def assert_samples_equal(got: list[FusedSample], want: list[FusedSample]) -> None:
    assert len(got) == len(want)
    for g, w in zip(got, want, strict=True):
        assert (g.seq, g.timestamp, g.rig, g.label, g.target_position) == (
            w.seq,
            w.timestamp,
            w.rig,
            w.label,
            w.target_position,
        )
        assert type(g.seq) is int and type(g.timestamp) is float
        assert g.objects == w.objects
        assert g.capture_times == w.capture_times and g.stage_times == w.stage_times
        assert g.segments.keys() == w.segments.keys()
        for m, ws in w.segments.items():
            gs = g.segments[m]
            assert gs.grid == ws.grid
            assert gs.values.dtype == ws.values.dtype and np.array_equal(gs.values, ws.values)
            if ws.positions is None:
                assert gs.positions is None
            else:
                assert gs.positions is not None
                assert gs.positions.dtype == ws.positions.dtype and np.array_equal(gs.positions, ws.positions)


def make_frames(modality: Modality, rng: np.random.Generator, n: int = 5) -> list[Frame]:
    frames = []
    for k in range(n):
        if modality is Modality.CAMERA:
            data = rng.integers(0, 256, (6 + k % 2, 9, 3), dtype=np.uint8)
            rate = None
        elif modality is Modality.MICROPHONE:
            t = np.arange(160 + 10 * k) / 16000.0
            data = (0.5 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
            rate = 16000.0
        else:
            data = rng.standard_normal((20 + 13 * k, 4), dtype=np.float32)
            rate = None
        frames.append(
            Frame(
                modality=modality,
                sensor_id=f"{modality.value}-{k % 2}",
                timestamp=BASE_T + k / 30,
                wall_time=BASE_T + 0.5 + k / 30,
                data=data,
                sample_rate=rate,
                index=k + 1000,
            )
        )
    return frames


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
        assert g.data.dtype == w.data.dtype and g.data.shape == w.data.shape
        assert np.array_equal(g.data, w.data)


def write_arrow(path: Path, table: pa.Table) -> None:
    with ipc.new_file(str(path), table.schema) as writer:
        writer.write_table(table, max_chunksize=3)  # several batches


def read_arrow(path: Path) -> pa.Table:
    return ipc.open_file(pa.memory_map(str(path))).read_all()


# --- FusedSample ---------------------------------------------------------------------------


def test_samples_round_trip_every_modality_subset_bit_exact():
    samples = make_samples(np.random.default_rng(0))
    table = samples_to_table(samples)
    assert table.num_rows == 8
    back = table_to_samples(table)
    assert_samples_equal(back, samples)
    assert [s.missing for s in back] == [s.missing for s in samples]
    assert back[0].segments == {} and back[0].label == 0 and back[1].label is None
    assert [None if s.objects is None else len(s.objects) for s in back] == [None, 0, 1, 2, None, 0, 1, 2]


def test_samples_round_trip_through_arrow_and_parquet_files(tmp_path):
    samples = make_samples(np.random.default_rng(1))
    table = samples_to_table(samples)
    write_arrow(tmp_path / "s.arrow", table)
    pq.write_table(table, tmp_path / "s.parquet", row_group_size=3)
    assert_samples_equal(table_to_samples(read_arrow(tmp_path / "s.arrow")), samples)
    assert_samples_equal(table_to_samples(pq.read_table(tmp_path / "s.parquet")), samples)


def test_sliced_table_reads_the_right_rows():
    samples = make_samples(np.random.default_rng(2))
    assert_samples_equal(table_to_samples(samples_to_table(samples).slice(3, 4)), samples[3:7])


def test_empty_sample_table():
    table = samples_to_table([])
    assert table.schema.equals(sample_schema()) and table_to_samples(table) == []


def test_samples_schema_uses_canonical_variable_shape_tensor():
    values_type = sample_schema().field("lidar").type.field("values").type
    assert values_type.extension_name == "arrow.variable_shape_tensor"
    assert values_type.storage_type == pa.struct(
        [pa.field("data", pa.list_(pa.float32())), pa.field("shape", pa.list_(pa.int32(), 2))]
    )
    meta = sample_schema().metadata
    assert meta[VERSION_KEY] == str(SCHEMA_VERSION).encode() and meta[b"fusion.kind"] == b"samples"


def test_serialize_deserialize_bytes():
    for sample in make_samples(np.random.default_rng(3)):
        data = serialize_sample(sample)
        assert isinstance(data, bytes)
        assert_samples_equal([deserialize_sample(data)], [sample])


def test_deserialize_rejects_garbage_and_several_samples():
    with pytest.raises(ValueError, match="serialized sample"):
        deserialize_sample(b"not arrow at all")
    table = samples_to_table(make_samples(np.random.default_rng(4))[:2])
    sink = pa.BufferOutputStream()
    with ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    with pytest.raises(ValueError, match="holds 2 samples, expected 1"):
        deserialize_sample(sink.getvalue().to_pybytes())


def test_segment_values_must_be_float32():
    sample = FusedSample(
        seq=0, timestamp=1.0, segments={Modality.CAMERA: Segment(np.zeros((4, 3)), grid=(2, 2))}
    )
    with pytest.raises(ValueError, match=r"'camera.values' row 0: expected a 2-d float32 array.*float64"):
        samples_to_table([sample])


def test_unknown_capture_modality_names_column_and_row():
    table = samples_to_table(make_samples(np.random.default_rng(5))[:3])
    times = pa.array([[], [("radar", 1.0)], []], pa.map_(pa.string(), pa.float64()))
    table = table.set_column(table.schema.get_field_index("capture_times"), "capture_times", times)
    with pytest.raises(ValueError, match=r"'capture_times' row 1: unknown modality 'radar'"):
        table_to_samples(table)


def test_null_in_required_column_names_row():
    table = samples_to_table(make_samples(np.random.default_rng(6))[:3])
    seq = pa.array([0, None, 2], pa.int64())
    table = pa.Table.from_arrays([seq, *table.columns[1:]], schema=table.schema)
    with pytest.raises(ValueError, match=r"column 'seq' row 1: null"):
        table_to_samples(table)


def test_wrong_sample_column_type_is_named():
    table = samples_to_table(make_samples(np.random.default_rng(7))[:2])
    label = table.column("label").cast(pa.int64())
    table = table.set_column(table.schema.get_field_index("label"), "label", label)
    with pytest.raises(ValueError, match=r"column 'label' has type int64, expected int32"):
        table_to_samples(table)


# --- Frame ---------------------------------------------------------------------------------


@pytest.mark.parametrize("modality", list(Modality))
def test_frames_round_trip_each_modality(modality, tmp_path):
    frames = make_frames(modality, np.random.default_rng(8))
    table = frames_to_table(frames)
    assert table.schema.metadata[b"fusion.modality"] == modality.value.encode()
    assert_frames_equal(table_to_frames(table), frames)
    write_arrow(tmp_path / "f.arrow", table)
    pq.write_table(table, tmp_path / "f.parquet", row_group_size=2)
    assert_frames_equal(table_to_frames(read_arrow(tmp_path / "f.arrow")), frames)
    assert_frames_equal(table_to_frames(pq.read_table(tmp_path / "f.parquet")), frames)


def test_frame_tensor_dtype_and_rank_follow_the_modality():
    camera = frame_schema(Modality.CAMERA).field("data").type
    lidar = frame_schema(Modality.LIDAR).field("data").type
    assert camera.storage_type.field("data").type.value_type == pa.uint8()
    assert camera.storage_type.field("shape").type.list_size == 3
    assert lidar.storage_type.field("shape").type.list_size == 2


def test_frames_to_table_rejects_mixed_modalities_and_empty_without_modality():
    rng = np.random.default_rng(9)
    mixed = make_frames(Modality.CAMERA, rng, 2) + make_frames(Modality.LIDAR, rng, 1)
    with pytest.raises(ValueError, match=r"row 2 \('lidar-0'\) is a lidar frame in a camera table"):
        frames_to_table(mixed)
    with pytest.raises(ValueError, match="no frames and no modality"):
        frames_to_table([])
    assert table_to_frames(frames_to_table([], modality=Modality.LIDAR)) == []


def _with_shape(table: pa.Table, row: int, shape: list[int]) -> pa.Table:
    """`table` with the `data` tensor of `row` claiming `shape` (its data left as it is)."""
    column = table.column("data").combine_chunks()
    storage = column.storage
    shapes = storage.field("shape").to_pylist()
    shapes[row] = shape
    tampered = pa.StructArray.from_arrays(
        [storage.field("data"), pa.array(shapes, storage.type.field("shape").type)],
        fields=list(storage.type),
    )
    return table.set_column(table.schema.get_field_index("data"), "data", column.type.wrap_array(tampered))


def test_shape_inconsistent_with_data_names_column_and_row():
    table = frames_to_table(make_frames(Modality.LIDAR, np.random.default_rng(10), 3))
    with pytest.raises(
        ValueError, match=r"<t>: column 'data' row 1: shape \(34, 5\) needs 170 values, the data has 132"
    ):
        table_to_frames(_with_shape(table, 1, [34, 5]), source="<t>")


def test_shape_breaking_the_frame_contract_names_row():
    table = frames_to_table(make_frames(Modality.LIDAR, np.random.default_rng(11), 2))
    with pytest.raises(ValueError, match=r"row 0: lidar frame from 'lidar-0': expected \[N, 4\]"):
        table_to_frames(_with_shape(table, 0, [40, 2]))  # 80 values, like [20, 4]


def test_wrong_frame_column_type_is_named():
    table = frames_to_table(make_frames(Modality.CAMERA, np.random.default_rng(12), 2))
    table = table.set_column(2, "timestamp", table.column("timestamp").cast(pa.float32()))
    with pytest.raises(ValueError, match=r"column 'timestamp' has type float, expected double"):
        table_to_frames(table)


# --- versions --------------------------------------------------------------------------------


def test_newer_schema_version_is_refused_naming_the_file(tmp_path):
    table = frames_to_table(make_frames(Modality.CAMERA, np.random.default_rng(13), 2))
    meta = {**table.schema.metadata, VERSION_KEY: b"99"}
    path = tmp_path / "cam.arrow"
    write_arrow(path, table.replace_schema_metadata(meta))
    with pytest.raises(
        ValueError, match=rf"{path}: recording written with schema version 99; this build reads 1"
    ):
        table_to_frames(read_arrow(path), source=str(path))
    sample_table = samples_to_table(make_samples(np.random.default_rng(13))[:1])
    with pytest.raises(ValueError, match="schema version 99"):
        table_to_samples(
            sample_table.replace_schema_metadata({**sample_table.schema.metadata, VERSION_KEY: b"99"})
        )


def test_a_samples_file_of_schema_version_1_still_reads_without_objects():
    # Written by the version-1 code (before the `objects` column): two samples, one labelled.
    table = read_arrow(DATA / "samples-v1.arrow")
    assert table.schema.metadata[VERSION_KEY] == b"1" and "objects" not in table.schema.names
    first, second = table_to_samples(table, source="samples-v1.arrow")
    assert (first.seq, first.timestamp, first.label, first.target_position) == (
        0,
        12.5,
        3,
        (10.0, -1.5, -0.75),
    )
    assert np.array_equal(first.segments[Modality.MICROPHONE].values, np.arange(6, dtype=np.float32)[:, None])
    assert second.label is None and set(second.segments) == {Modality.LIDAR}
    assert first.objects is None and second.objects is None  # not labelled with objects
    assert SCHEMA_VERSION == 2 and samples_to_table([first]).schema.metadata[VERSION_KEY] == b"2"


def test_a_version_2_samples_table_without_objects_is_refused():
    table = samples_to_table(make_samples(np.random.default_rng(16))[:2])
    with pytest.raises(ValueError, match="<table>: missing column 'objects'"):
        table_to_samples(table.drop_columns(["objects"]))


def test_a_bad_object_names_column_and_row():
    table = samples_to_table(make_samples(np.random.default_rng(17))[:3])
    rows = table.column("objects").to_pylist()
    rows[2][0]["size"] = [4.0, 0.0, 1.5]
    bad = table.set_column(
        table.schema.get_field_index("objects"), "objects", pa.array(rows, table.schema.field("objects").type)
    )
    with pytest.raises(ValueError, match=r"column 'objects' row 2: Box3D size w is 0.0 m"):
        table_to_samples(bad)


def test_missing_schema_version_is_refused():
    table = frames_to_table(make_frames(Modality.MICROPHONE, np.random.default_rng(14), 2))
    with pytest.raises(ValueError, match=r"no fusion.schema_version .*this build reads 1"):
        table_to_frames(table.replace_schema_metadata(None))


def test_frames_table_is_not_a_samples_table():
    table = frames_to_table(make_frames(Modality.MICROPHONE, np.random.default_rng(15), 1))
    with pytest.raises(ValueError, match="holds 'frames' data, expected 'samples'"):
        table_to_samples(table)


# --- zero copy -------------------------------------------------------------------------------


def test_frames_read_as_views_of_the_table_buffer():
    table = frames_to_table(make_frames(Modality.LIDAR, np.random.default_rng(16), 4))
    buffer = table.column("data").chunk(0).storage.field("data").values.to_numpy(zero_copy_only=True)
    frames = table_to_frames(table)
    assert all(np.shares_memory(f.data, buffer) for f in frames)
    assert not frames[0].data.flags.writeable


def test_memory_mapped_file_is_read_without_allocating(tmp_path):
    frames = make_frames(Modality.CAMERA, np.random.default_rng(17), 6)
    path = tmp_path / "cam.arrow"
    write_arrow(path, frames_to_table(frames))
    before = pa.total_allocated_bytes()
    back = table_to_frames(read_arrow(path))
    assert pa.total_allocated_bytes() - before == 0  # every array points into the mapping
    assert_frames_equal(back, frames)
