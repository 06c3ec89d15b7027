"""A sensor's reads as its actor makes them: `SourceReader`, a source read in capture order,
paced onto a clock, resumable after a restart. Ray-free: `pipelines.sensor_actor` is its shell.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

from fusion.clock import Pacer
from fusion.sample import Frame
from fusion.sensors import EndOfStream, Source


class SensorNotStarted(RuntimeError):
    """A read before `start` (the actor was restarted and not reopened yet): the driver
    restarts the sensor, as when the actor died."""


class SourceReader:
    """Reads `source` in capture order, pacing each frame with `pacer` (replay's `speed`).

    `start(resume_from=k)` opens the source and skips the k frames already delivered, so a
    replay continues exactly where a dead actor stopped. `read` returns as soon as it has
    something: a frame never waits for the ones after it.

    Args:
        source: the sensor's source, not yet open.
        pacer: when each frame is due (speed None: at once).
        name: what errors call the sensor (its config key path).
        sleep, clock: injected by tests (a fake clock); the pacer's must be the same clock.
    """

    def __init__(
        self,
        source: Source,
        pacer: Pacer,
        *,
        name: str,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.source, self.pacer, self.name = source, pacer, name
        self._sleep, self._clock = sleep, clock
        self.delivered = 0  # frames handed out since the start of the stream (resumed ones included)
        self.ended = False
        self.started = False
        self.newest = -math.inf  # timestamp of the newest frame handed out
        self._held: Frame | None = None  # read from the source, not due yet

    def start(self, resume_from: int = 0) -> int:
        """Open the source (fails naming the file or device) and skip `resume_from` frames;
        returns how many it skipped. Blocks while the source opens and skips."""
        self.source.open()
        for _ in range(resume_from):
            try:
                self.source.read(timeout=None)
            except EndOfStream:
                break
        self.delivered = resume_from
        self._held = None
        self.started = True
        return resume_from

    def read(self, max_frames: int, timeout_s: float) -> list[Frame] | None:
        """Up to `max_frames` frames: waits up to `timeout_s` for the first, then takes only
        those already due. `[]`: nothing within `timeout_s`; None: the source has ended.
        Raises SensorNotStarted before `start`."""
        if not self.started:
            raise SensorNotStarted(f"{self.name}: read before start (the actor was restarted)")
        if self.ended:
            return None
        frames: list[Frame] = []
        deadline = self._clock() + timeout_s
        while len(frames) < max_frames:
            frame = self._next(deadline, first=not frames)
            if frame is None:
                break
            delay = self.pacer.delay(frame.timestamp)
            if delay > 0 and (frames or delay > deadline - self._clock()):
                self._held = frame  # not due within this read: it opens the next one
                if not frames and (rest := deadline - self._clock()) > 0:
                    self._sleep(rest)
                break
            if delay > 0:
                self._sleep(delay)
            frames.append(frame)
        self.delivered += len(frames)
        if frames:
            self.newest = frames[-1].timestamp
        return None if not frames and self.ended else frames

    def _next(self, deadline: float, *, first: bool) -> Frame | None:
        """The held frame, else the source's next: the first waits until `deadline`, the rest
        only take what is there. None when nothing came (or the source ended: `ended`)."""
        frame, self._held = self._held, None
        if frame is not None:
            return frame
        try:
            return self.source.read(timeout=max(0.0, deadline - self._clock()) if first else 0.0)
        except TimeoutError:
            return None
        except EndOfStream:
            self.ended = True
            return None
