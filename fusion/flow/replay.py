"""Replay's reading plan: which sensors to read next, and the pushes to each rig's fuser.

Lossless and deterministic: the fuser must see the same streams every run whatever the actors'
timing, so sensors are read in timestamp lockstep (none more than a lookahead ahead of the
slowest), and samples are taken from the fuser's pushes in the order the pushes were sent.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from fusion.flow.messages import SensorKey
from fusion.flow.recovery import SensorProgress
from fusion.sample import FusedSample

LOOKAHEAD_S = 0.5  # how far a sensor may read ahead of the slowest one of its rig
S = TypeVar("S", bound=SensorProgress)


def lockstep_reads(
    sensors: Sequence[S], *, reading: Collection[SensorKey], lookahead_s: float = LOOKAHEAD_S
) -> list[S]:
    """The sensors of one rig to read now: those not ended, not being read (`reading`), and
    not more than `lookahead_s` ahead of the slowest of them (by their newest frame)."""
    active = [s for s in sensors if not s.ended]
    slowest = min((s.latest for s in active), default=math.inf)
    return [s for s in active if s.key not in reading and s.latest <= slowest + lookahead_s]


@dataclass(frozen=True)
class Push:
    """Send these frame lists (references to sensors' reads) to the fuser, in this order."""

    frames: tuple[Any, ...]


@dataclass(frozen=True)
class Finish:
    """Every sensor has ended and every frame was pushed: ask the fuser for the rest."""


@dataclass
class PushWindow:
    """One rig's frames read and not yet pushed, and its pushes in flight (at most `max_pushes`).

    The driver does not wait for a push before sending the next: the fuser runs its calls in
    the order sent, so a tick whose last frame just came in is not held behind an earlier
    push's round trip. Results are released in the order sent, whatever order they come in.
    """

    max_pushes: int = 4
    buffered: list[tuple[Any, int]] = field(default_factory=list)  # (frames, how many)
    finishing: bool = False  # `Finish` was planned: nothing more is pushed
    _sent: deque[Any] = field(default_factory=deque)  # call tokens, oldest first
    _done: dict[Any, list[FusedSample]] = field(default_factory=dict)  # came back before an older one

    @property
    def buffered_frames(self) -> int:
        return sum(count for _, count in self.buffered)

    @property
    def finished(self) -> bool:
        """The fuser has given everything it will: `Finish` was sent and answered."""
        return self.finishing and not self._sent

    def buffer(self, frames: Any, count: int) -> None:
        self.buffered.append((frames, count))

    def next(self, *, all_ended: bool) -> Push | Finish | None:
        """What to send now, if anything: the frames buffered, or `Finish` once every sensor
        ended and nothing is buffered. The caller passes the call's token to `sent`."""
        if self.finishing or len(self._sent) >= self.max_pushes:
            return None
        if self.buffered:
            frames, self.buffered = tuple(f for f, _ in self.buffered), []
            return Push(frames=frames)
        if all_ended:
            self.finishing = True
            return Finish()
        return None

    def sent(self, token: Any) -> None:
        self._sent.append(token)

    def answered(self, token: Any, samples: list[FusedSample]) -> list[FusedSample]:
        """The samples a push fused; returns those now released, in the order pushes were sent."""
        self._done[token] = samples
        out: list[FusedSample] = []
        while self._sent and self._sent[0] in self._done:
            out += self._done.pop(self._sent.popleft())
        return out
