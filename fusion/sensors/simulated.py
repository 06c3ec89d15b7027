"""Simulated camera, microphone and LiDAR, all looking at one `fusion.sim.World`.

They are finite-or-endless pull sources: frame k of a stream is captured at scene time
`start_s + k / rate_hz` and is a pure function of (world seed, stream, k), so two runs give
the same frames byte for byte; frames come as fast as they are asked for.

With `realtime: true` (a live demo) the scene clock is the wall clock: frames fall on the grid
`k / rate_hz` of Unix time and a read waits until its frame is due. Every simulated sensor, in
any process or on any host, then agrees on the time without being told a common start.
"""

from __future__ import annotations

import contextlib
import math
import os
import threading
import time
from abc import abstractmethod
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from typing import ClassVar, Literal

import numpy as np
from pydantic import Field

from fusion.clock import Pacer
from fusion.sample import Frame, Modality
from fusion.sensors.registry import register_source
from fusion.sensors.source import EndOfStream, Source, SourceConfig
from fusion.sim.audio import AudioSynth
from fusion.sim.camera import render_camera
from fusion.sim.lidar import lidar_rays, scan_lidar
from fusion.sim.world import World, WorldConfig, frame_rng


class SimulatedConfig(SourceConfig):
    backend: Literal["simulated"] = "simulated"
    world: WorldConfig = WorldConfig()
    rate_hz: float = Field(default=10.0, gt=0)  # frames (audio: chunks) per second
    start_s: float = 0.0  # scene time of the first frame
    duration_s: float | None = Field(default=None, gt=0)  # None: endless
    realtime: bool = False  # pace reads to the scene clock
    # Realtime: seconds of frames the simulated device holds for a reader that falls behind once
    # streaming; older ones are lost (counted as dropped 'overrun'), as a camera's, a sound
    # card's or a LiDAR driver's buffer does. At least one frame.
    buffer_s: float = Field(default=1.0, gt=0)
    # Realtime: how long before its due time a frame may be rendered. The simulated device renders
    # at a lower CPU priority than its reader into that slack, so the simulator's own cost (a real device
    # spends it on its own hardware) yields to the pipeline it feeds instead of delaying it.
    render_ahead_s: float = Field(default=0.25, ge=0)


DEVICE_NICE_STEP = 4  # how much lower than its reader a simulated device's thread runs


def _lower_priority() -> None:
    """Run the calling thread `DEVICE_NICE_STEP` nice values below its process (at most 19): a
    simulated device yields the CPU to the pipeline it feeds (in a Ray worker, nice 15 -> 19,
    2.4x less CPU share when both want it) yet is never starved outright, as it would be under
    SCHED_IDLE or a fixed nice 19 in a process that other work outranks."""
    with contextlib.suppress(AttributeError, OSError):  # no per-thread nice here: reader's priority
        tid = threading.get_native_id()
        own = os.getpriority(os.PRIO_PROCESS, tid)
        os.setpriority(os.PRIO_PROCESS, tid, min(19, own + DEVICE_NICE_STEP))


class SimulatedSource(Source):
    """Shared pacing and bookkeeping; subclasses render one frame."""

    config: SimulatedConfig
    stream_id: ClassVar[int]

    def __init__(self, config: SimulatedConfig) -> None:
        super().__init__(config)
        self.world = World(config.world)
        self._index = 0
        self._origin = config.start_s
        self._first_time = config.start_s
        self._render_s = 0.05  # realtime: how long a frame takes to render (the recent slowest)
        self._streaming = False
        # Realtime: the frames being rendered ahead on a thread of its own (the simulated device),
        # oldest first; a frame stays here until it is handed over.
        self._device: ThreadPoolExecutor | None = None
        self._queue: deque[tuple[int, Future[Frame]]] = deque()
        # Realtime: frame times are Unix times, so the pacer maps them onto the wall clock as they are.
        self._pacer = Pacer(1.0, clock=time.time, anchor=(0.0, 0.0))

    def open(self) -> None:
        self._origin = 0.0 if self.config.realtime else self.config.start_s
        self._index = 0
        self._first_time = self.frame_time(0)
        self._streaming = False  # realtime: the first read places the stream on the clock
        self._queue.clear()

    def close(self) -> None:
        if self._device is not None:
            self._device.shutdown(wait=True, cancel_futures=True)
            self._device = None
        self._queue.clear()

    def first_index(self, now: float) -> int:
        """Realtime: the first frame on the wall-clock grid at or after `now`."""
        return math.ceil(now * self.config.rate_hz)

    def frame_time(self, index: int) -> float:
        return self._origin + index / self.config.rate_hz

    def due_time(self, index: int) -> float:
        """Realtime: when frame `index` is complete and handed over (a chunk: at its last sample)."""
        return self.frame_time(index)

    def read(self, timeout: float | None = None) -> Frame:
        """Next frame; with `realtime`, blocks until it is due (TimeoutError past `timeout`).

        In real time frames are rendered ahead, up to `render_ahead_s` before they are due, and
        handed over when due, as a device delivers a frame once captured: rendering is the
        simulator's cost, not latency a real sensor would add. It runs on the source's own
        thread at a lower CPU priority than its reader, as a device captures on its own clock and its own
        hardware: a frame is rendered once however many reads time out waiting for it, a reader
        that comes back late does not make the next frame late too, and the rendering fills the
        time the pipeline leaves idle instead of competing with the tick just delivered.
        """
        deadline = None if timeout is None else self._pacer.now() + timeout
        if self.config.realtime and not self._streaming:
            # A device streams from the first read: the reader gets the next frame captured, not a
            # backlog of everything since `open` (which start-up may have left seconds behind).
            self._index = self.first_index(self._pacer.now())
            self._first_time = self.frame_time(self._index)
            self._streaming = True
        elif self.config.realtime:
            self._overrun(self._pacer.now())
        index = self._index
        if self._past_end(index):
            raise EndOfStream
        if self.config.realtime:
            due = self.due_time(index)
            frame = self._rendered(index, deadline, due)
            self._pause_until(due, deadline)  # the frame stays queued if this times out
            self._queue.popleft()
        else:
            frame = self._make_frame(index, self.frame_time(index))
        self._index += 1
        self.stats.frames += 1
        return frame

    def _past_end(self, index: int) -> bool:
        t = self.frame_time(index)
        return self.config.duration_s is not None and t >= self._first_time + self.config.duration_s

    def _lead(self) -> float:
        """How long before its due time a frame starts rendering at the latest: `render_ahead_s`,
        or twice the recent slowest render if that is longer."""
        return max(self.config.render_ahead_s, 2.0 * self._render_s + 0.003)

    def _schedule(self, first: int, ahead: bool = True) -> None:
        """Queue on the device thread every frame from `first` on that is due within `_lead()`
        (at least frame `first`; only it when not `ahead`); frames before `first` (skipped by an
        overrun) are dropped."""
        if self._device is None:
            self._device = ThreadPoolExecutor(
                max_workers=1, thread_name_prefix=f"sim-{self.sensor_id}", initializer=_lower_priority
            )
        while self._queue and self._queue[0][0] < first:
            self._queue.popleft()[1].cancel()
        index = self._queue[-1][0] + 1 if self._queue else first
        horizon = self._pacer.now() + self._lead()
        while not self._past_end(index) and (not self._queue or (ahead and self.due_time(index) <= horizon)):
            self._queue.append((index, self._device.submit(self._timed_render, index)))
            index += 1

    def _timed_render(self, index: int) -> Frame:
        began = time.perf_counter()
        frame = self._make_frame(index, self.frame_time(index))
        # The slow renders set the lead, so a device slower than `render_ahead_s` still keeps up.
        self._render_s = max(time.perf_counter() - began, 0.9 * self._render_s)
        return frame

    def _rendered(self, index: int, deadline: float | None, due: float) -> Frame:
        """Frame `index` from the device thread (queued now if it is not yet: the first read, or
        frames skipped by overrun), waiting for it up to `deadline`."""
        self._schedule(index, ahead=False)
        assert self._queue and self._queue[0][0] == index
        rendering = self._queue[0][1]
        wait = None if deadline is None else max(0.0, deadline - self._pacer.now())
        if not rendering.done():
            if wait == 0.0:
                raise self._not_due(due)  # a poll: nothing to hand over now
            self._schedule(index)  # the reader waits anyway: the device renders ahead meanwhile
        try:
            return rendering.result(timeout=wait)
        except FutureTimeout:
            raise self._not_due(due) from None

    def _pause_until(self, due: float, deadline: float | None) -> None:
        """Sleep until `due` (Unix time); past `deadline`, sleep until it and time out."""
        now = self._pacer.now()
        if due <= now:
            return
        if deadline is None or deadline > now:
            # The reader waits now, idle: the device renders ahead meanwhile, not while the frame
            # just handed over is preprocessed and sent by this process (they would share the
            # GIL, which a low-priority device thread, once preempted, holds long). A poll
            # (timeout 0) is part of that hand-over.
            self._schedule(self._index)
        if not self._pacer.wait(due, deadline=deadline):
            raise self._not_due(due)  # a poll (timeout 0) returns at once: no sleep(0), no GIL hand-off

    def _not_due(self, due: float) -> TimeoutError:
        return TimeoutError(
            f"{self.modality.value}/{self.sensor_id}: next frame due in {self._pacer.delay(due):.3f} s"
        )

    def _make_frame(self, index: int, t: float) -> Frame:
        """Frame `index` at scene time `t`: a pure function of (world seed, stream, index)."""
        rng = frame_rng(self.config.world.seed, self.stream_id, index)
        return Frame(
            modality=self.modality,
            sensor_id=self.sensor_id,
            timestamp=t,
            # Realtime frames are captured on schedule; otherwise at the moment they are made.
            wall_time=t if self.config.realtime else time.time(),
            index=index,
            **self.render(t, rng),
        )

    def _overrun(self, now: float) -> None:
        """Skip the frames a device's buffer would have overwritten by `now`: a reader that falls
        behind gets the newest `buffer_s` worth, not an ever older backlog."""
        newest = math.floor((now - self._origin) * self.config.rate_hz)  # the latest frame already due
        held = max(1, math.ceil(self.config.buffer_s * self.config.rate_hz))
        lost = newest - held + 1 - self._index
        if lost > 0:
            self._index += lost
            self.stats.dropped["overrun"] += lost

    @abstractmethod
    def render(self, t: float, rng: np.random.Generator) -> dict: ...


class SimCameraConfig(SimulatedConfig):
    rate_hz: float = Field(default=30.0, gt=0)
    width: int = Field(default=640, ge=8)
    height: int = Field(default=480, ge=8)


@register_source
class SimCamera(SimulatedSource):
    modality = Modality.CAMERA
    backend = "simulated"
    config_cls = SimCameraConfig
    config: SimCameraConfig
    stream_id = 1

    def render(self, t: float, rng: np.random.Generator) -> dict:
        img = render_camera(
            self.world.state(t),
            width=self.config.width,
            height=self.config.height,
            rng=rng,
            sensor_height=self.config.world.sensor_height_m,
        )
        return {"data": img}


class SimLidarConfig(SimulatedConfig):
    beams: int = Field(default=16, ge=1)
    azimuth_steps: int = Field(default=900, ge=8)  # 0.4 degree resolution


@register_source
class SimLidar(SimulatedSource):
    modality = Modality.LIDAR
    backend = "simulated"
    config_cls = SimLidarConfig
    config: SimLidarConfig
    stream_id = 2

    def __init__(self, config: SimLidarConfig) -> None:
        super().__init__(config)
        self._rays = lidar_rays(config.beams, config.azimuth_steps)

    def render(self, t: float, rng: np.random.Generator) -> dict:
        pts = scan_lidar(self.world.state(t), self._rays, height=self.config.world.sensor_height_m, rng=rng)
        return {"data": pts}


class SimMicrophoneConfig(SimulatedConfig):
    rate_hz: float = Field(default=20.0, gt=0)  # 50 ms chunks
    sample_rate: int = Field(default=16000, ge=1000)


@register_source
class SimMicrophone(SimulatedSource):
    modality = Modality.MICROPHONE
    backend = "simulated"
    config_cls = SimMicrophoneConfig
    config: SimMicrophoneConfig
    stream_id = 3

    def __init__(self, config: SimMicrophoneConfig) -> None:
        super().__init__(config)
        self._audio = AudioSynth(self.world, sample_rate=config.sample_rate)

    def frame_time(self, index: int) -> float:
        # Chunks start on exact sample boundaries so the stream has no gaps or overlaps.
        return self._origin + self._chunk_start(index) / self.config.sample_rate

    def due_time(self, index: int) -> float:
        # A sound card hands a chunk over once its last sample is in, never ahead of the sound.
        return self.frame_time(index + 1)

    def _chunk_start(self, index: int) -> int:
        return round(index * self.config.sample_rate / self.config.rate_hz)

    def render(self, t: float, rng: np.random.Generator) -> dict:
        sr = self.config.sample_rate
        first = round(t * sr)
        # The chunk's index from its time (not from `_index`, which the reader moves on).
        index = round(round((t - self._origin) * sr) * self.config.rate_hz / sr)
        n = self._chunk_start(index + 1) - self._chunk_start(index)
        # Audio is a function of the sample index alone (not of `rng`): chunks join seamlessly and
        # match the windows of the training data.
        return {"data": self._audio(first, n), "sample_rate": float(sr)}
