"""Where fused samples wait for inference, in what batches they go, and to which actor.

`PendingQueue` is one rig's queue in the driver, `BatchPlanner` cuts it into batches,
`InferencePool` counts the batches each inference actor holds and picks the one to send to,
`Dispatcher` combines them into one planning step. None of them calls anything: the driver
sends what the plan says and reports back what came of it.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

from fusion.errors import InputError
from fusion.sample import FusedSample


class PendingQueue:
    """Fused samples of one rig waiting for an inference actor, oldest first.

    `drop_oldest` (live): past `capacity` the oldest are dropped, returned by `extend` for the
    caller to skip and counted in `dropped`, so latency stays bounded by the queue. Otherwise
    (replay) nothing is ever dropped; `full` tells the reader to stop reading instead.
    """

    def __init__(self, *, capacity: int, drop_oldest: bool) -> None:
        if capacity < 1:
            raise InputError(f"capacity must be at least 1, got {capacity}")
        self.capacity = capacity
        self.drop_oldest = drop_oldest
        self.dropped = 0
        self.max_depth = 0  # the most ever waiting after an `extend`: bounded by `capacity` in live
        self._samples: deque[FusedSample] = deque()

    def __len__(self) -> int:
        return len(self._samples)

    def __iter__(self) -> Iterator[FusedSample]:
        return iter(self._samples)

    @property
    def full(self) -> bool:
        return len(self._samples) >= self.capacity

    def extend(self, samples: Iterable[FusedSample]) -> list[FusedSample]:
        """Append newly fused samples; returns those dropped to make room (live), oldest first."""
        self._samples.extend(samples)
        gone = []
        if self.drop_oldest:
            while len(self._samples) > self.capacity:
                gone.append(self._samples.popleft())
        self.dropped += len(gone)
        self.max_depth = max(self.max_depth, len(self._samples))
        return gone

    def requeue(self, samples: Sequence[FusedSample]) -> None:
        """Put samples back at the front, in their order: they were taken before any waiting now
        (resubmission after their actor died). Nothing is dropped here; the next `extend` trims."""
        self._samples.extendleft(reversed(samples))

    def take(self, n: int) -> tuple[FusedSample, ...]:
        """The `n` oldest samples (fewer if fewer wait), removed."""
        return tuple(self._samples.popleft() for _ in range(min(n, len(self._samples))))


class BatchPlanner:
    """How a queue is cut into inference calls.

    `fixed` (replay): batches of exactly `size` consecutive samples, the last one shorter only
    once the rig has finished, so every run sends the same batches and gets the same bytes
    back. Otherwise (live) one sample per call: the actor batches concurrent calls itself, and
    a sample never waits in the driver for the ones after it.
    """

    def __init__(self, *, size: int, fixed: bool) -> None:
        if size < 1:
            raise InputError(f"batch size must be at least 1, got {size}")
        self.size = size
        self.fixed = fixed

    def next_batch(self, queue: PendingQueue, *, finished: bool) -> tuple[FusedSample, ...] | None:
        """The next batch to send, taken from `queue`; None if none is due yet."""
        if not queue:
            return None
        if not self.fixed:
            return queue.take(1)
        if len(queue) < self.size and not finished:
            return None
        return queue.take(self.size)


class InferencePool:
    """Calls in flight at each inference actor (by pool index), at most `max_in_flight` each."""

    def __init__(self, *, slots: int, max_in_flight: int) -> None:
        if slots < 1:
            raise InputError(f"an inference pool needs at least one actor, got {slots}")
        self.max_in_flight = max_in_flight
        self.in_flight = [0] * slots

    def free_slot(self) -> int | None:
        """The least busy actor (the first of equals) if it has room, else None."""
        slot = min(range(len(self.in_flight)), key=self.in_flight.__getitem__)
        return slot if self.in_flight[slot] < self.max_in_flight else None

    def sent(self, slot: int) -> None:
        self.in_flight[slot] += 1

    def answered(self, slot: int) -> None:
        """A call to `slot` came back, with predictions or because its actor died."""
        assert self.in_flight[slot] > 0, f"nothing in flight at inference actor {slot}"
        self.in_flight[slot] -= 1

    @property
    def total(self) -> int:
        return sum(self.in_flight)


@dataclass(frozen=True)
class Send:
    """One planned inference call: `batch` to pool[slot]."""

    slot: int
    batch: tuple[FusedSample, ...]


@dataclass
class RigQueue:
    """What the dispatcher needs of one rig: its queue, and whether it will fuse nothing more."""

    pending: PendingQueue
    finished: bool = False


class Dispatcher:
    """Plans which waiting samples go to which inference actor now."""

    def __init__(self, *, pool: InferencePool, planner: BatchPlanner) -> None:
        self.pool = pool
        self.planner = planner

    def plan(self, rigs: Sequence[RigQueue]) -> list[Send]:
        """Every call to make now, rig by rig, each counted as sent: stops when no actor has
        room; a rig whose next batch is not due yet leaves the rest to the following rigs."""
        sends: list[Send] = []
        for rig in rigs:
            while rig.pending:
                slot = self.pool.free_slot()
                if slot is None:
                    return sends
                batch = self.planner.next_batch(rig.pending, finished=rig.finished)
                if batch is None:
                    break
                self.pool.sent(slot)
                sends.append(Send(slot=slot, batch=batch))
        return sends
