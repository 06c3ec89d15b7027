"""What a fault leaves to redo: where a restarted sensor resumes, and how often it may restart.

Samples a dead inference actor held go back to the front of their rig's queue
(`PendingQueue.requeue`); the sink drops any duplicate prediction by sequence number.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from fusion.errors import RunEnded
from fusion.flow.messages import SensorKey, StreamState, Taken


class TooManyRestarts(RunEnded):
    """A sensor's actor died more often than the config allows."""


@dataclass(kw_only=True)
class SensorProgress:
    """How far one sensor got, as the driver knows it."""

    rig: str
    sensor_id: str
    delivered: int = 0  # frames read (replay) or streamed (live, as last reported)
    latest: float = -math.inf  # timestamp of the newest frame read
    ended: bool = False
    restarts: int = 0
    discarded: int = 0  # live: frames dropped while switched off, as the actor last reported

    @property
    def key(self) -> SensorKey:
        return (self.rig, self.sensor_id)

    def on_read(self, taken: Taken | None) -> int:
        """A replay read came back (None: the stream ended); returns the frames it gave."""
        if taken is None:
            self.ended = True
            return 0
        if taken.count:
            self.delivered += taken.count
            self.latest = taken.newest
        return taken.count

    def on_state(self, state: StreamState) -> None:
        """What a live sensor reported of its stream."""
        self.delivered = state.delivered
        self.discarded = state.discarded
        self.latest = state.newest
        if not state.streaming and state.ended:
            self.ended = True

    def restart(self, *, live: bool, max_restarts: int) -> int:
        """Its actor died (and Ray restarts it): returns the frame to resume from. A replay
        continues after the last frame delivered, so no frame is fused twice or missed; a live
        device goes on from now, with nothing to skip. Raises `TooManyRestarts` past the limit."""
        self.restarts += 1
        if self.restarts > max_restarts:
            raise TooManyRestarts(f"rig {self.rig} sensor {self.sensor_id}: actor died {self.restarts} times")
        return 0 if live else self.delivered
