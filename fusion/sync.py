"""Time alignment of one rig's sensor streams into fused ticks.

`Synchronizer` is the fuser's clock. Frames are pushed as they arrive (streams interleaved in any
order, late, jittery) and `poll` returns one `AlignedSet` per tick, in tick order:

- Reference mode (`reference: lidar`): every frame of the reference modality is a tick at its
  timestamp. If that stream stalls, no ticks come; the other streams are kept for `buffer_s`
  and then evicted (counted).
- Fixed rate (`rate_hz: 10`): ticks at `start + k / rate_hz`, or without `start` on the grid
  `k / rate_hz` from the earliest frame rounded up. Ticks go on through a stalled stream, with
  that modality missing.

At tick t a camera or LiDAR stream contributes its unused frame nearest t within `slop_s` (ties:
the earlier one); each such frame serves at most one tick. The microphone contributes the samples
of [t - audio_window_s, t), cut at sample boundaries; a window that is partly missing (stream
start, gap) is shorter and says by how much.

A tick is emitted as soon as every expected stream has moved past it (a frame at or after
t + slop, or with `wait_for_slop: false` at or after t; audio up to t), or once the watermark (the newest capture time seen, or the `now` given
to `poll`) passes t + the largest slop + `max_delay_s`. Counting the wait from the end of the
tick's acceptance window gives a per-frame guarantee: a frame that arrives before the watermark
passes its own timestamp + `max_delay_s` is never late. The output then depends only on the
frames, not on how the streams interleave, provided each stream arrives in its own capture order:
sources deliver in order and Ray keeps the order of one actor's calls to another. A frame whose
timestamp goes backwards within its stream is counted `out_of_order` and still used if a tick can
use it, but a tick that its stream had already passed may have been emitted without it.

Nothing is dropped silently: every frame pushed is either used by a tick or counted in
`SyncStats.dropped` with a reason. `poll` evicts what no tick can use any more, so call it
regularly: memory is bounded by `buffer_s` of frames per stream.
"""

from __future__ import annotations

import bisect
import math
from collections import Counter
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Annotated

import numpy as np
from pydantic import Field, model_validator

from fusion.config import ModalityKey, StrictModel
from fusion.errors import InputError
from fusion.sample import MODALITY_ORDER, Frame, Modality

# Float noise allowed when a time is compared with a tick (k / rate_hz is not exact in binary).
# Live sources stamp Unix time (~1.8e9 s), where one float64 step is 0.24 us: an audio chunk's
# end (its start plus 800 / 16000 s) lands a step short of the LiDAR tick it ends at on one
# tick in five, and a 1e-9 tolerance then held that tick for the next chunk, 50 ms later.
# 1 us is four steps there and far below any sensor's sample period (62.5 us at 16 kHz).
_EPS = 1e-6


def _default_slop() -> dict[Modality, float]:
    return {Modality.CAMERA: 0.05, Modality.LIDAR: 0.06}


class SyncConfig(StrictModel):
    """How the fuser aligns streams; exactly one of `reference` and `rate_hz`."""

    modalities: list[ModalityKey] = Field(default_factory=lambda: list(MODALITY_ORDER), min_length=1)
    reference: ModalityKey | None = None  # ticks are this modality's frame timestamps
    rate_hz: float | None = Field(default=None, gt=0)  # or ticks at a fixed rate
    start: float | None = None  # rate_hz only: the grid origin; None = k / rate_hz from the first frame
    # Max |frame.timestamp - tick| to use a frame, per non-audio modality.
    slop_s: dict[ModalityKey, Annotated[float, Field(ge=0)]] = Field(default_factory=_default_slop)
    audio_window_s: float = Field(default=1.0, gt=0)  # the microphone window ends at the tick
    max_delay_s: float = Field(default=0.2, ge=0)  # wait for late frames past the acceptance window
    buffer_s: float = Field(default=2.0, gt=0)  # frames reaching no tick after watermark - buffer_s go
    out_of_order_tolerance_s: float = Field(default=0.0, ge=0)  # backwards steps not counted
    # Wait for a frame past tick + slop before emitting early (tolerates reordering within the
    # slop); false: a frame past the tick is enough (lower latency, needs in-order streams).
    wait_for_slop: bool = True

    @model_validator(mode="after")
    def _check(self) -> SyncConfig:
        if (self.reference is None) == (self.rate_hz is None):
            raise InputError(
                "give exactly one of `reference` (a modality whose frames are the ticks) or `rate_hz`, "
                f"got reference={self.reference}, rate_hz={self.rate_hz}"
            )
        if len(set(self.modalities)) != len(self.modalities):
            raise InputError(f"modalities lists a modality twice: {[m.value for m in self.modalities]}")
        if self.reference is not None and self.reference not in self.modalities:
            raise InputError(f"reference {self.reference.value!r} is not one of modalities")
        if self.reference is Modality.MICROPHONE:
            raise InputError("reference cannot be microphone (chunks are windows, not instants); use rate_hz")
        if self.start is not None and self.rate_hz is None:
            raise InputError("start applies only with rate_hz")
        if Modality.MICROPHONE in self.slop_s:
            raise InputError("slop_s.microphone: the microphone contributes a window (audio_window_s)")
        lacking = [m.value for m in self.modalities if m is not Modality.MICROPHONE and m not in self.slop_s]
        if lacking:
            raise InputError(f"slop_s has no entry for {', '.join(lacking)}")
        if self.buffer_s < self.max_delay_s + self.max_slop_s:
            # Less would evict frames that a tick still waiting for its deadline needs.
            raise InputError(
                f"buffer_s ({self.buffer_s}) must be at least max_delay_s + the largest slop_s "
                f"({self.max_delay_s + self.max_slop_s})"
            )
        return self

    @property
    def max_slop_s(self) -> float:
        """The largest slop of a stream that a tick waits for (not the reference, not audio)."""
        waited = [m for m in self.modalities if m not in (Modality.MICROPHONE, self.reference)]
        return max((self.slop_s[m] for m in waited), default=0.0)


class DropReason(StrEnum):
    """Why a pushed frame was not used by any tick."""

    LATE = "late"  # arrived when no pending or future tick could use it
    DUPLICATE = "duplicate"  # same stream, same timestamp as a buffered frame
    EVICTED_UNUSED = "evicted_unused"  # buffered, but no tick chose it
    UNEXPECTED_MODALITY = "unexpected_modality"  # not in SyncConfig.modalities
    UNEXPECTED_SENSOR = "unexpected_sensor"  # another sensor id than the stream's first frame
    SAMPLE_RATE_CHANGED = "sample_rate_changed"  # microphone chunk at another rate than the first


@dataclass
class SyncStats:
    """What the synchronizer received, used and dropped; after `flush`, received = used + dropped."""

    received: Counter[Modality] = field(default_factory=Counter)
    used: Counter[Modality] = field(default_factory=Counter)  # frames that went into >= 1 tick
    dropped: Counter[tuple[Modality, DropReason]] = field(default_factory=Counter)
    out_of_order: Counter[Modality] = field(default_factory=Counter)  # timestamp went backwards
    ticks: int = 0
    incomplete_ticks: int = 0  # ticks with at least one modality missing
    missing: Counter[Modality] = field(default_factory=Counter)  # ticks emitted without it
    short_audio_ticks: int = 0  # ticks whose audio window was partly missing


@dataclass(frozen=True)
class AlignedSet:
    """One tick's frames.

    Attributes:
        seq: consecutive from 0.
        tick: the tick time (the frames' clock).
        frames: modality -> the frame used; for the microphone a new Frame holding the window
            [n] samples, stamped with the time of its first sample.
        missing: expected modalities with no usable frame, in MODALITY_ORDER.
        offsets: modality -> frame.timestamp - tick.
        audio_missing_s: seconds of the audio window with no samples (0 without a microphone).
    """

    seq: int
    tick: float
    frames: dict[Modality, Frame]
    missing: tuple[Modality, ...]
    offsets: dict[Modality, float]
    audio_missing_s: float = 0.0


class _Stream:
    """One expected modality's buffered frames, sorted by timestamp, with a used flag each."""

    def __init__(self) -> None:
        self.frames: list[Frame] = []
        self.times: list[float] = []
        self.used: list[bool] = []
        self.sensor_id: str | None = None
        self.sample_rate: float | None = None
        self.newest = -math.inf  # newest timestamp accepted
        self.newest_end = -math.inf  # newest end time accepted (audio: after its last sample)

    def insert(self, frame: Frame) -> None:
        i = bisect.bisect_right(self.times, frame.timestamp)
        self.frames.insert(i, frame)
        self.times.insert(i, frame.timestamp)
        self.used.insert(i, False)
        self.newest = max(self.newest, frame.timestamp)
        self.newest_end = max(self.newest_end, frame.end_time)

    def has_time(self, t: float) -> bool:
        i = bisect.bisect_left(self.times, t)
        return i < len(self.times) and self.times[i] == t

    def ends(self) -> np.ndarray:
        return np.array([f.end_time for f in self.frames])

    def nearest(self, tick: float, slop: float) -> int | None:
        """Index of the unused frame nearest `tick` within `slop`; argmin keeps the earlier on ties."""
        if not self.frames:
            return None
        dist = np.where(self.used, np.inf, np.abs(np.asarray(self.times) - tick))
        i = int(np.argmin(dist))
        return i if dist[i] <= slop + _EPS else None

    def window(self, tick: float, window_s: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Chunks covering [tick - window_s, tick) and each one's sample range [begin, end).

        Returns (indices [k], begin [k], end [k]) of the chunks that contribute samples.
        """
        rate = self.sample_rate
        assert rate is not None, "a stream with chunks has a sample rate"
        starts = np.asarray(self.times)
        lengths = np.array([len(f.data) for f in self.frames])
        ends = starts + lengths / rate
        # A chunk stamped a little early overlaps its predecessor: trim it so no sample repeats.
        prev_end = np.concatenate([[-np.inf], np.maximum.accumulate(ends)[:-1]])
        lo = np.maximum(np.maximum(starts, prev_end), tick - window_s)
        hi = np.minimum(ends, tick)
        begin = np.clip(np.round((lo - starts) * rate), 0, lengths).astype(np.int64)
        end = np.clip(np.round((hi - starts) * rate), 0, lengths).astype(np.int64)
        take = np.flatnonzero(end > begin)
        return take, begin[take], end[take]

    def remove(self, gone: np.ndarray) -> int:
        """Drop the frames where `gone`; return how many of them were never used."""
        keep = np.flatnonzero(~gone)
        unused = int(np.count_nonzero(gone & ~np.asarray(self.used, dtype=bool)))
        self.frames = [self.frames[i] for i in keep]
        self.times = [self.times[i] for i in keep]
        self.used = [self.used[i] for i in keep]
        return unused


class Synchronizer:
    """Aligns the frames of one rig into ticks (see the module docstring for the rules).

    Deterministic: the same frames pushed in the same order, with the same `poll`/`now` calls,
    give the same AlignedSets. Not thread-safe; one fuser owns it.
    """

    def __init__(self, config: SyncConfig) -> None:
        self.config = config
        self.stats = SyncStats()
        self._streams = {m: _Stream() for m in MODALITY_ORDER if m in config.modalities}
        self._wait = config.max_slop_s + config.max_delay_s
        self._watermark = -math.inf
        self._seq = 0
        self._last_tick = -math.inf
        self._pending: list[float] = []  # reference mode: ticks not emitted yet, sorted
        self._next_k: int | None = 0 if config.start is not None else None  # rate mode: next grid index
        self._earliest = math.inf  # rate mode without start: places the first tick

    def push(self, frame: Frame) -> None:
        """Take one frame; never blocks and never raises for a frame that cannot be used."""
        m = frame.modality
        self.stats.received[m] += 1
        stream = self._streams.get(m)
        reason = DropReason.UNEXPECTED_MODALITY if stream is None else self._reject(stream, frame)
        if reason is not None:
            self.stats.dropped[(m, reason)] += 1
            return
        assert stream is not None
        stream.insert(frame)
        self._watermark = max(self._watermark, frame.end_time)
        self._earliest = min(self._earliest, frame.timestamp)
        if m is self.config.reference:
            bisect.insort(self._pending, frame.timestamp)

    def poll(self, now: float | None = None) -> list[AlignedSet]:
        """Ticks that are complete or whose wait expired, in tick order; never blocks.

        Args:
            now: the current time on the frames' clock; moves the watermark forward when the
                streams have gone quiet.
        """
        if now is not None:
            self._watermark = max(self._watermark, now)
        out = self._emit_due(flushing=False)
        self._evict(everything=False)
        return out

    def flush(self) -> list[AlignedSet]:
        """End of stream: every remaining tick up to the newest frame, then an empty buffer."""
        out = self._emit_due(flushing=True)
        self._evict(everything=True)
        return out

    def _reject(self, stream: _Stream, frame: Frame) -> DropReason | None:
        # The first frame of a stream claims it for its sensor (and, for audio, its rate).
        stream.sensor_id = stream.sensor_id or frame.sensor_id
        if frame.sensor_id != stream.sensor_id:
            return DropReason.UNEXPECTED_SENSOR
        if frame.modality is Modality.MICROPHONE:
            stream.sample_rate = stream.sample_rate or frame.sample_rate
            if frame.sample_rate != stream.sample_rate:
                return DropReason.SAMPLE_RATE_CHANGED
        if stream.has_time(frame.timestamp):
            return DropReason.DUPLICATE
        if frame.timestamp < stream.newest - self.config.out_of_order_tolerance_s:
            self.stats.out_of_order[frame.modality] += 1  # counted even when still useful
        reach = self._reach(frame.modality, np.asarray(frame.timestamp), np.asarray(frame.end_time))
        return DropReason.LATE if self._useless(reach) else None

    def _reach(self, m: Modality, start: np.ndarray, end: np.ndarray) -> np.ndarray:
        """The latest tick frames starting at `start` and ending at `end` can serve."""
        if m is self.config.reference:
            return start
        if m is Modality.MICROPHONE:
            return end + self.config.audio_window_s
        return start + self.config.slop_s[m]

    def _useless(self, reach: np.ndarray) -> np.ndarray:
        """Whether no tick still to come can use a frame reaching up to `reach`."""
        gone = reach < self._watermark - self.config.buffer_s
        if self.config.reference is not None:
            return gone | (reach <= self._last_tick)
        if self._next_k is not None:
            gone = gone | (reach < self._tick_at(self._next_k) - _EPS)
        return gone

    def _tick_at(self, k: int) -> float:
        assert self.config.rate_hz is not None
        return (self.config.start or 0.0) + k / self.config.rate_hz

    def _grid_k(self) -> int | None:
        """Rate mode: the grid index of the next tick, if one is known yet."""
        assert self.config.rate_hz is not None
        if self._next_k is not None or math.isinf(self._earliest):
            return self._next_k
        # Until the first tick is out, an earlier frame arriving late may move the start back.
        return math.ceil(self._earliest * self.config.rate_hz - _EPS)

    def _candidate(self) -> float | None:
        """The next tick to emit, if one is known yet."""
        if self.config.reference is not None:
            return self._pending[0] if self._pending else None
        k = self._grid_k()
        return None if k is None else self._tick_at(k)

    def _due(self, tick: float, flushing: bool) -> bool:
        if flushing:
            return self.config.reference is not None or tick <= self._watermark + _EPS
        return self._watermark > tick + self._wait or self._complete(tick)

    def _complete(self, tick: float) -> bool:
        """Every expected stream has moved far enough past `tick` that no better frame can come.

        With `wait_for_slop`, a camera or LiDAR stream must reach tick + slop, so a frame arriving
        out of order within the slop still counts. Without it, a frame at or after the tick ends
        the search (any later frame in capture order is farther from the tick): up to one slop
        less latency, for streams that arrive in order, as the pipeline's do.
        """
        for m, stream in self._streams.items():
            if m is self.config.reference:
                continue
            if m is Modality.MICROPHONE:
                if stream.newest_end < tick - _EPS:
                    return False
            elif stream.newest < tick + (self.config.slop_s[m] if self.config.wait_for_slop else 0.0) - _EPS:
                return False
        return True

    def _emit_due(self, flushing: bool) -> list[AlignedSet]:
        out = []
        while (tick := self._candidate()) is not None and self._due(tick, flushing):
            out.append(self._emit(tick))
            if self.config.reference is not None:
                self._pending.pop(0)
            else:
                k = self._grid_k()
                assert k is not None, "a rate-mode tick was emitted, so its grid index is known"
                self._next_k = k + 1
            self._last_tick = tick
        return out

    def _emit(self, tick: float) -> AlignedSet:
        frames: dict[Modality, Frame] = {}
        audio_missing = 0.0
        for m, stream in self._streams.items():
            if m is Modality.MICROPHONE:
                frame, audio_missing = self._cut_audio(stream, tick)
            else:
                i = stream.nearest(tick, self.config.slop_s[m])
                frame = None if i is None else self._use(m, stream, [i])[0]
            if frame is not None:
                frames[m] = frame
        missing = tuple(m for m in self._streams if m not in frames)
        self.stats.ticks += 1
        self.stats.incomplete_ticks += bool(missing)
        self.stats.missing.update(missing)
        self.stats.short_audio_ticks += audio_missing > 0 and Modality.MICROPHONE in frames
        offsets = {m: f.timestamp - tick for m, f in frames.items()}
        aligned = AlignedSet(self._seq, tick, frames, missing, offsets, audio_missing)
        self._seq += 1
        return aligned

    def _use(self, m: Modality, stream: _Stream, indices: list[int] | np.ndarray) -> list[Frame]:
        for i in indices:
            if not stream.used[i]:
                stream.used[i] = True
                self.stats.used[m] += 1
        return [stream.frames[i] for i in indices]

    def _cut_audio(self, stream: _Stream, tick: float) -> tuple[Frame | None, float]:
        """The microphone window ending at `tick` as one Frame, and the seconds of it missing."""
        window = self.config.audio_window_s
        if not stream.frames:
            return None, window
        take, begin, end = stream.window(tick, window)
        if take.size == 0:
            return None, window
        chunks = self._use(Modality.MICROPHONE, stream, take)
        data = np.concatenate([c.data[b:e] for c, b, e in zip(chunks, begin, end, strict=True)])
        rate = float(chunks[0].sample_rate or 0.0)
        lead = float(begin[0]) / rate
        frame = Frame(
            modality=Modality.MICROPHONE,
            sensor_id=chunks[0].sensor_id,
            timestamp=chunks[0].timestamp + lead,
            wall_time=chunks[0].wall_time + lead,
            data=data,
            sample_rate=rate,
            index=chunks[0].index,
        )
        short = max(0, round(window * rate) - len(data))
        return frame, short / rate

    def _evict(self, everything: bool) -> None:
        for m, stream in self._streams.items():
            if not stream.frames:
                continue
            if everything:
                gone = np.ones(len(stream.frames), dtype=bool)
            else:
                gone = self._useless(self._reach(m, np.asarray(stream.times), stream.ends()))
            unused = stream.remove(gone)
            if unused:
                self.stats.dropped[(m, DropReason.EVICTED_UNUSED)] += unused
