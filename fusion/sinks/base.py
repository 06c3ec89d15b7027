"""Where predictions go: JSON lines, Parquet, or a callback; in sequence order, exactly once.

`OrderedSink` sits in front of any sink: per rig it holds predictions that arrive early,
releases them in sequence order, drops duplicates (a resubmitted sample that both the dead and
the new actor answered), and counts what it could not write, with the reason.
"""

from __future__ import annotations

import json
import sys
import threading
from abc import ABC, abstractmethod
from collections import Counter, deque
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import pyarrow as pa
import pyarrow.parquet as pq

from fusion.errors import InputError
from fusion.sample import Prediction


class Sink(ABC):
    @abstractmethod
    def write(self, prediction: Prediction) -> None: ...

    def close(self) -> None:  # noqa: B027 - most sinks have nothing to release
        """Flush and release; the sink is unusable afterwards."""


class JsonlSink(Sink):
    """One JSON object per line, to a file or to stdout (`-`)."""

    def __init__(self, path: str | Path = "-") -> None:
        self._own = str(path) != "-"
        self._out: IO[str] = open(path, "w", buffering=1) if self._own else sys.stdout  # noqa: SIM115

    def write(self, prediction: Prediction) -> None:
        self._out.write(json.dumps(prediction.to_record(), separators=(",", ":")) + "\n")

    def close(self) -> None:
        self._out.flush()
        if self._own:
            self._out.close()


class ParquetSink(Sink):
    """Row groups of `rows_per_group` predictions; the file is valid once closed. The columns
    are the JSON record's; `objects` is a list of structs (class, score, position [3], size [3],
    yaw, velocity [2])."""

    def __init__(self, path: str | Path, *, rows_per_group: int = 256) -> None:
        self.path = Path(path)
        self.rows_per_group = rows_per_group
        self._rows: list[dict[str, Any]] = []
        self._writer: pq.ParquetWriter | None = None

    def write(self, prediction: Prediction) -> None:
        record = prediction.to_record()
        record["stage_times"] = list(record["stage_times"].items())
        self._rows.append(record)
        if len(self._rows) >= self.rows_per_group:
            self._flush()

    def _flush(self) -> None:
        if not self._rows:
            return
        table = pa.Table.from_pylist(self._rows, schema=_PARQUET_SCHEMA)
        if self._writer is None:
            self._writer = pq.ParquetWriter(self.path, _PARQUET_SCHEMA)
        self._writer.write_table(table)
        self._rows = []

    def close(self) -> None:
        self._flush()
        if self._writer is None:  # no prediction at all: still leave a valid, empty file
            self._writer = pq.ParquetWriter(self.path, _PARQUET_SCHEMA)
        self._writer.close()


# One object of a prediction, as `fusion.sample.object_record` writes it; float64, so Box3D
# values come back exactly.
_OBJECT = pa.struct(
    [
        ("class", pa.string()),
        ("score", pa.float64()),
        ("position", pa.list_(pa.float64(), 3)),
        ("size", pa.list_(pa.float64(), 3)),
        ("yaw", pa.float64()),
        ("velocity", pa.list_(pa.float64(), 2)),
    ]
)
_PARQUET_SCHEMA = pa.schema(
    [
        ("rig", pa.string()),
        ("seq", pa.int64()),
        ("timestamp", pa.float64()),
        ("label", pa.string()),
        ("probs", pa.list_(pa.float32())),
        ("position", pa.list_(pa.float32())),
        ("modalities", pa.list_(pa.string())),
        ("latency_s", pa.float64()),
        ("model_version", pa.string()),
        ("stage_times", pa.map_(pa.string(), pa.float64())),
        ("error", pa.string()),
        ("objects", pa.list_(_OBJECT)),
    ]
)


class CallbackSink(Sink):
    """Calls `fn(prediction)`; for tests and embedding."""

    def __init__(self, fn: Callable[[Prediction], None]) -> None:
        self._fn = fn

    def write(self, prediction: Prediction) -> None:
        self._fn(prediction)


class OrderedSink(Sink):
    """Writes each rig's predictions in sequence order, each sequence number once.

    Predictions with an `error` are counted and not written. When more than `max_pending`
    predictions wait behind a missing sequence number, the gap is given up (counted under
    `gap`) so memory stays bounded.
    """

    def __init__(self, sink: Sink, *, max_pending: int = 1024) -> None:
        self.sink = sink
        self.max_pending = max_pending
        self._next: dict[str, int] = {}
        self._pending: dict[str, dict[int, Prediction | None]] = {}  # None: known skipped
        self.written = 0
        self.skipped: Counter[str] = Counter()  # reason -> count

    def write(self, prediction: Prediction) -> None:
        self._put(prediction.rig, prediction.seq, prediction)

    def skip(self, rig: str, seq: int) -> None:
        """Sequence number `seq` will never come (dropped upstream and counted there): do not wait for it."""
        self._put(rig, seq, None)

    def _put(self, rig: str, seq: int, prediction: Prediction | None) -> None:
        nxt = self._next.setdefault(rig, 0)
        pending = self._pending.setdefault(rig, {})
        if seq < nxt or seq in pending:
            if prediction is not None:
                self.skipped["duplicate"] += 1
            return
        pending[seq] = prediction
        self._release(rig)
        if len(pending) > self.max_pending:
            first = min(pending)
            self.skipped["gap"] += first - self._next[rig]
            self._next[rig] = first
            self._release(rig)

    def _release(self, rig: str) -> None:
        pending = self._pending[rig]
        while self._next[rig] in pending:
            p = pending.pop(self._next[rig])
            self._next[rig] += 1
            if p is None:
                continue
            if p.error is not None:
                self.skipped["error"] += 1
            else:
                self.sink.write(p)
                self.written += 1

    def next_seq(self, rig: str) -> int:
        return self._next.get(rig, 0)

    def close(self) -> None:
        """Write what is still pending, in order, across any gaps; then close the sink."""
        for rig, pending in self._pending.items():
            while pending:
                first = min(pending)
                self.skipped["gap"] += first - self._next[rig]
                self._next[rig] = first
                self._release(rig)
        self.sink.close()


class BackgroundSink(Sink):
    """Writes on its own thread, so a slow sink (a disk, a network, a UI) never stalls the loop
    that feeds it. Live policy at the last edge: at most `capacity` predictions wait; when the
    sink falls further behind, the oldest waiting one is dropped and counted in `dropped`.

    An exception raised by the wrapped sink stops the writer and is raised again by the next
    `write` or by `close`.
    """

    def __init__(self, sink: Sink, *, capacity: int = 256) -> None:
        if capacity < 1:
            raise InputError(f"capacity must be >= 1, got {capacity}")
        self.sink = sink
        self.capacity = capacity
        self.dropped = 0
        self._queue: deque[Prediction] = deque()
        self._cond = threading.Condition()
        self._closing = False
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="sink-writer", daemon=True)
        self._thread.start()

    def write(self, prediction: Prediction) -> None:
        self._raise()
        with self._cond:
            if len(self._queue) >= self.capacity:
                self._queue.popleft()
                self.dropped += 1
            self._queue.append(prediction)
            self._cond.notify()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._closing:
                    self._cond.wait()
                if not self._queue:
                    return
                prediction = self._queue.popleft()
            try:
                self.sink.write(prediction)
            except BaseException as err:
                self._error = err
                return

    def _raise(self) -> None:
        if self._error is not None:
            raise RuntimeError(f"output sink failed: {self._error}") from self._error

    def close(self) -> None:
        """Write everything still queued, then close the wrapped sink."""
        with self._cond:
            self._closing = True
            self._cond.notify()
        self._thread.join()
        self._raise()
        self.sink.close()
