"""Pacing timestamped items on a clock: real time, a multiple of it, or as fast as they come.

One `Pacer` serves every place that waits for an item's time: `fusion.recording.Replayer`, the
sensor actors replaying finite sources, and the real-time sources. One `DeviceBuffer` is how
every real-time source (the simulated sensors, a recording replayed as a live device) hands its
frames over as a device would. The clock and the sleep are injected, so tests run on a fake clock.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Generic, TypeVar

from fusion.errors import InputError


def check_speed(speed: float | None) -> float | None:
    """`speed` itself when it is a positive number or None; ValueError naming it otherwise."""
    if speed is not None and not (math.isfinite(speed) and speed > 0):
        raise InputError(f"speed must be a positive number or None, got {speed}")
    return speed


class Pacer:
    """Maps item timestamps onto `clock` at `speed` and waits until each item is due.

    Timestamp t is due at `origin + (t - t0) / speed` on `clock`. Without `anchor`, (t0, origin)
    are the first timestamp asked about and the clock at that moment: the first item is due at
    once and the rest keep their spacing. `anchor=(t0, origin)` fixes the mapping in advance;
    (0.0, 0.0) at speed 1 says the timestamps already are times on `clock`. With `speed` None
    every item is due at once and nothing sleeps.

    A consumer that falls behind is never caught up by skipping: late items are simply due.

    Args:
        speed: clock seconds per timestamp second, inverted (2.0: twice real time); None: no
            pacing. InputError when it is not a positive number or None.
        clock: the clock due times are on (monotonic by default).
        sleep: how to wait (injected with `clock` by tests).
        anchor: (t0, origin): timestamp t0 is due at `origin` on `clock`; None: the first
            timestamp asked about is due at once.
    """

    def __init__(
        self,
        speed: float | None = 1.0,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        anchor: tuple[float, float] | None = None,
    ) -> None:
        self.speed = check_speed(speed)
        self._clock = clock
        self._sleep = sleep
        self._anchor = anchor

    def now(self) -> float:
        """The time on the pacer's clock."""
        return self._clock()

    def due(self, timestamp: float) -> float:
        """When (on the clock) an item stamped `timestamp` is due; -inf without a speed.

        The first call of an unanchored pacer anchors it at this timestamp and the clock now.
        """
        if self.speed is None:
            return -math.inf
        if self._anchor is None:
            self._anchor = (timestamp, self._clock())
        t0, origin = self._anchor
        return origin + (timestamp - t0) / self.speed

    def delay(self, timestamp: float) -> float:
        """Seconds until an item stamped `timestamp` is due (<= 0: due now). Never blocks."""
        if self.speed is None:
            return 0.0
        return self.due(timestamp) - self._clock()

    def wait(self, timestamp: float, *, deadline: float | None = None) -> bool:
        """Block until an item stamped `timestamp` is due and return True.

        With a `deadline` (a time on the clock) before the item is due, block only until the
        deadline, or not at all when it has passed (a poll), and return False.
        """
        due = self.due(timestamp)
        now = self._clock()
        if due <= now:
            return True
        if deadline is not None and due > deadline:
            if deadline > now:
                self._sleep(deadline - now)
            return False
        self._sleep(due - now)
        return True


T = TypeVar("T")


class DeviceBuffer(Generic[T]):
    """A real-time device's frames as its reader gets them: each is handed over at its due time,
    and the device holds the last `buffer_s` seconds of them for a reader that falls behind.

    The device's stream is a lazy iterable of (due time, frame), in due order, due times on
    `clock` (Unix time by default: a device stamps on the wall clock). `next()` gives the frame
    to hand over next: the held one, or the stream's next, skipping every frame whose due time
    is more than `buffer_s` before now (overwritten in the device's buffer: counted in
    `overruns` and reported to `on_overrun`), as a camera's, a sound card's or a LiDAR driver's
    buffer loses the oldest. `hand_over()` blocks until that frame is due; when it times out the
    frame stays held for the next read, so polling loses nothing.

    Args:
        buffer_s: seconds of frames the device holds; InputError unless a positive number.
        clock: the clock due times are on.
        sleep: how to wait (injected with `clock` by tests).
        on_overrun: called with the number of frames one `next()` skipped, when there are any.
    """

    def __init__(
        self,
        *,
        buffer_s: float,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
        on_overrun: Callable[[int], None] | None = None,
    ) -> None:
        if not (math.isfinite(buffer_s) and buffer_s > 0):
            raise InputError(f"buffer_s must be a positive number of seconds, got {buffer_s}")
        self.buffer_s = buffer_s
        self.pacer = Pacer(1.0, clock=clock, sleep=sleep, anchor=(0.0, 0.0))  # due times are clock times
        self.overruns = 0
        self._on_overrun = on_overrun
        self._stream: Iterator[tuple[float, T]] | None = None
        self._held: tuple[float, T] | None = None

    @property
    def streaming(self) -> bool:
        """Whether a stream was started (and not stopped since)."""
        return self._stream is not None

    def start(self, frames: Iterable[tuple[float, T]]) -> None:
        """Stream `frames` (due time, frame), in due order, from the next `next()` on."""
        self._stream, self._held = iter(frames), None

    def stop(self) -> None:
        """Forget the stream and the held frame (the device closed)."""
        self._stream, self._held = None, None

    def deadline(self, timeout: float | None) -> float | None:
        """The time on the clock a read given `timeout` seconds (None: no limit) must end by."""
        return None if timeout is None else self.pacer.now() + timeout

    def next(self) -> tuple[float, T] | None:
        """(due time, frame) of the next hand-over, held until `hand_over` succeeds; frames the
        buffer has overwritten by now are skipped and counted. None once the stream has ended.
        Never blocks (beyond what the stream's iterator costs)."""
        if self._stream is None:
            raise RuntimeError("DeviceBuffer.next() before start()")
        oldest = self.pacer.now() - self.buffer_s
        current = self._held or next(self._stream, None)
        lost = 0
        while current is not None and current[0] < oldest:
            lost += 1
            current = next(self._stream, None)
        if lost:
            self.overruns += lost
            if self._on_overrun is not None:
                self._on_overrun(lost)
        self._held = current
        return current

    def hand_over(self, due: float, *, deadline: float | None, what: str) -> None:
        """Block until `due`, then release the held frame. Past `deadline` (a time on the clock),
        raise TimeoutError naming `what` and when the frame is due; the frame stays held."""
        if not self.pacer.wait(due, deadline=deadline):
            raise self.not_due(due, what=what)
        self._held = None

    def not_due(self, due: float, *, what: str) -> TimeoutError:
        """The TimeoutError of a read that ended before its frame, due at `due`, was handed over."""
        return TimeoutError(f"{what}: next frame due in {self.pacer.delay(due):.3f} s")
