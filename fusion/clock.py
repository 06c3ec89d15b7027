"""Pacing timestamped items on a clock: real time, a multiple of it, or as fast as they come.

One `Pacer` serves every place that waits for an item's time: `fusion.recording.Replayer`, the
sensor actors replaying finite sources, and the simulated sensors in real time. The clock and
the sleep are injected, so tests run on a fake clock.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

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
