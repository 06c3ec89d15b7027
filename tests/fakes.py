"""Test doubles shared by several test modules (faked at the boundary: the clock)."""

from __future__ import annotations


class FakeClock:
    """A monotonic clock that moves only when slept on (or when a test moves `now`)."""

    def __init__(self, now: float = 100.0) -> None:
        self.now = now
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        assert seconds > 0, "a pacer never sleeps for nothing"
        self.sleeps.append(seconds)
        self.now += seconds
