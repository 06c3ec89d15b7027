import json

import pyarrow.parquet as pq
import pytest

from fusion.detection.boxes import Box3D
from fusion.sample import Prediction, object_from_record
from fusion.sinks import open_sink
from fusion.sinks.base import BackgroundSink, CallbackSink, JsonlSink, OrderedSink, ParquetSink


def pred(seq: int, rig: str = "rig0", error: str | None = None) -> Prediction:
    return Prediction(
        rig=rig,
        seq=seq,
        timestamp=seq * 0.1,
        label="car",
        probs=[0.25, 0.75],
        position=[1.0, 2.0, 0.0],
        modalities=["camera", "lidar"],
        latency_s=0.01,
        model_version="test",
        stage_times={"fused": 1.0},
        error=error,
    )


def test_ordered_sink_releases_in_order_and_drops_duplicates():
    got = []
    sink = OrderedSink(CallbackSink(got.append))
    for seq in [2, 0, 1, 1, 4, 3, 0]:
        sink.write(pred(seq))
    assert [p.seq for p in got] == [0, 1, 2, 3, 4]
    assert sink.skipped["duplicate"] == 2 and sink.written == 5


def test_ordered_sink_keeps_rigs_apart_and_skips_errors():
    got = []
    sink = OrderedSink(CallbackSink(got.append))
    for p in [pred(1, "b"), pred(0, "a"), pred(0, "b", error="NaN"), pred(1, "a")]:
        sink.write(p)
    assert [(p.rig, p.seq) for p in got] == [("a", 0), ("b", 1), ("a", 1)]
    assert sink.skipped["error"] == 1


def test_ordered_sink_bounds_memory_by_giving_up_gaps():
    got = []
    sink = OrderedSink(CallbackSink(got.append), max_pending=3)
    for seq in [1, 2, 3, 4]:  # seq 0 never comes
        sink.write(pred(seq))
    assert [p.seq for p in got] == [1, 2, 3, 4] and sink.skipped["gap"] == 1
    sink.write(pred(0))  # arrives after it was given up: a duplicate now
    assert sink.skipped["duplicate"] == 1


def test_close_flushes_pending_across_gaps(tmp_path):
    got = []
    sink = OrderedSink(CallbackSink(got.append))
    for seq in [3, 1]:
        sink.write(pred(seq))
    sink.close()
    assert [p.seq for p in got] == [1, 3] and sink.skipped["gap"] == 2


def test_jsonl_and_parquet_files_hold_every_field(tmp_path):
    for path in (tmp_path / "out.jsonl", tmp_path / "out.parquet"):
        sink = open_sink(str(path))
        assert isinstance(sink, JsonlSink if path.suffix == ".jsonl" else ParquetSink)
        for seq in range(3):
            sink.write(pred(seq))
        sink.close()
    lines = [json.loads(x) for x in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert [x["seq"] for x in lines] == [0, 1, 2] and lines[0]["probs"] == [0.25, 0.75]
    table = pq.read_table(tmp_path / "out.parquet")
    assert table.column("seq").to_pylist() == [0, 1, 2]
    assert table.column("label").to_pylist() == ["car"] * 3
    assert table.column("position").to_pylist()[0] == [1.0, 2.0, 0.0]


OBJECTS = [
    Box3D(
        class_name="car",
        score=0.9,
        center=(12.5, -1.25, 0.75),
        size=(4.5, 1.8, 1.5),
        yaw=-2.5,
        velocity=(3.0, -0.5),
    ),
    Box3D(class_name="pedestrian", score=0.35, center=(4.0, 2.0, 0.9), size=(0.6, 0.6, 1.8), yaw=0.1),
]


def test_objects_round_trip_through_jsonl_and_parquet(tmp_path):
    with_objects = pred(0)
    with_objects.objects = list(OBJECTS)
    for path in (tmp_path / "out.jsonl", tmp_path / "out.parquet"):
        sink = open_sink(str(path))
        sink.write(with_objects)
        sink.write(pred(1))  # no objects
        sink.close()
    lines = [json.loads(x) for x in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert lines[0]["objects"][0] == {
        "class": "car",
        "score": 0.9,
        "position": [12.5, -1.25, 0.75],
        "size": [4.5, 1.8, 1.5],
        "yaw": -2.5,
        "velocity": [3.0, -0.5],
    }
    assert lines[1]["objects"] == []
    table = pq.read_table(tmp_path / "out.parquet")
    assert str(table.schema.field("objects").type) == (
        "list<element: struct<class: string, score: double, position: fixed_size_list<element: double>[3], "
        "size: fixed_size_list<element: double>[3], yaw: double, velocity: fixed_size_list<element: double>[2]>>"
    )
    parquet_rows = table.column("objects").to_pylist()
    assert parquet_rows[1] == []
    for rows in ([r["objects"] for r in lines], parquet_rows):
        assert [object_from_record(r) for r in rows[0]] == OBJECTS  # exactly: float64 throughout


def test_empty_parquet_is_still_a_valid_file(tmp_path):
    sink = ParquetSink(tmp_path / "none.parquet")
    sink.close()
    assert pq.read_table(tmp_path / "none.parquet").num_rows == 0


def test_bad_output_spec_is_named():
    with pytest.raises(ValueError, match=r"--output 'out\.csv'"):
        open_sink("out.csv")


def test_skipped_sequence_numbers_are_not_waited_for():
    got = []
    sink = OrderedSink(CallbackSink(got.append))
    sink.write(pred(1))
    sink.write(pred(2))
    assert got == []
    sink.skip("rig0", 0)  # dropped upstream
    assert [p.seq for p in got] == [1, 2] and not sink.skipped


def test_background_sink_never_blocks_and_drops_the_oldest_when_behind():
    import threading
    import time

    gate = threading.Event()
    got: list[int] = []

    def slow(p: Prediction) -> None:
        gate.wait(5)  # the sink is stuck until the writer has fallen far behind
        got.append(p.seq)

    sink = BackgroundSink(CallbackSink(slow), capacity=4)
    start = time.monotonic()
    for i in range(20):
        sink.write(pred(i))
    assert time.monotonic() - start < 1.0  # writes return at once while the sink is stuck
    gate.set()
    sink.close()
    # At most one was already being written; of the rest only the newest 4 survived, in order.
    assert got[-4:] == [16, 17, 18, 19] and len(got) <= 5 and got == sorted(got)
    assert sink.dropped == 20 - len(got)


def test_background_sink_raises_the_wrapped_sinks_error():
    def broken(p: Prediction) -> None:
        raise OSError("disk full")

    sink = BackgroundSink(CallbackSink(broken), capacity=8)
    sink.write(pred(0))
    with pytest.raises(RuntimeError, match="output sink failed: disk full"):
        for i in range(1, 200):  # the writer fails on the first; a later write reports it
            sink.write(pred(i))
            import time

            time.sleep(0.01)
