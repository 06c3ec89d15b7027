"""Simulated camera, microphone and LiDAR, all looking at one `fusion.sim.World`.

One source class, `SimulatedSource`, serves the three; what each sensor captures is its
`SimulatedSensor` (`CameraSim`, `LidarSim`, `MicrophoneSim`), which the training data renders
through too. The camera loads OpenCV (it rasterizes) and the LiDAR open3d (it ray-casts), each
only when one is built: a simulated microphone process loads neither.

They are finite-or-endless pull sources: frame k of a stream is captured at scene time
`start_s + k / rate_hz` and is a pure function of (world seed, stream, k), so two runs give
the same frames byte for byte; frames come as fast as they are asked for.

With `realtime: true` (a live demo) the scene clock is the wall clock: frames fall on the grid
`k / rate_hz` of Unix time and a read waits until its frame is due (`fusion.clock.DeviceBuffer`).
Every simulated sensor, in any process or on any host, then agrees on the time without being
told a common start. `clock: monotonic` restamps the frames onto this host's monotonic clock,
as live devices stamp theirs.
"""

from __future__ import annotations

import contextlib
import math
import os
import threading
import time
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any, ClassVar

import numpy as np

from fusion.clock import DeviceBuffer
from fusion.sample import Frame, Modality
from fusion.sensors.simulated_config import (
    SIMULATED,
    CameraSensor,
    Clock,
    LidarSensor,
    MicrophoneSensor,
    SimCameraConfig,
    SimLidarConfig,
    SimMicrophoneConfig,
    SimulatedConfig,
)
from fusion.sensors.source import EndOfStream, Source
from fusion.sim.audio import AudioSynth
from fusion.sim.world import World, frame_rng

# --------------------------------------------------------------------------- the sensors


class SimulatedSensor(ABC):
    """What one simulated sensor captures of the world: Frame fields for a frame index and time.

    Shared by `SimulatedSource` and the training data (`fusion.training.data`), so a live
    simulated rig and the data its model was trained on see the world through the same sensor.
    """

    stream: ClassVar[int]  # `frame_rng` stream: each sensor's noise independent of the others'
    # Frames after its own start at which a frame is complete and handed over: 0 for a snapshot,
    # 1 for a chunk of audio (a sound card hands it over once its last sample is in).
    handover: ClassVar[int] = 0

    def frame_start(self, index: int, rate_hz: float) -> float:
        """Seconds from the stream's origin to the start of frame `index` at `rate_hz`."""
        return index / rate_hz

    @abstractmethod
    def render(self, start: float, end: float, rng: np.random.Generator) -> dict[str, Any]:
        """The fields of a frame (`data`, and `sample_rate` for audio) captured over scene time
        [start, end) with `rng` its noise: a snapshot at `start`, or the audio samples in it."""


class CameraSim(SimulatedSensor):
    """[H, W, 3] uint8 RGB images of the world, rendered with OpenCV."""

    stream = 1

    def __init__(self, world: World, config: CameraSensor) -> None:
        from fusion.sim.camera import render_camera_scene  # OpenCV: loaded where a camera is simulated

        self._render = render_camera_scene
        self.world = world
        self.config = config

    def render(self, start: float, end: float, rng: np.random.Generator) -> dict[str, Any]:
        image = self._render(
            self.world.scene(start),
            width=self.config.width,
            height=self.config.height,
            rng=rng,
            sensor_height=self.world.config.sensor_height_m,
        )
        return {"data": image}


class LidarSim(SimulatedSensor):
    """[N, 4] float32 sweeps of the world, ray-cast with open3d."""

    stream = 2

    def __init__(self, world: World, config: LidarSensor) -> None:
        from fusion.sim.lidar import lidar_rays, scan_lidar_scene  # open3d: loaded where a LiDAR is simulated

        self._scan = scan_lidar_scene
        self.world = world
        self.rays = lidar_rays(config.beams, config.azimuth_steps)

    def render(self, start: float, end: float, rng: np.random.Generator) -> dict[str, Any]:
        sweep = self._scan(
            self.world.scene(start), self.rays, height=self.world.config.sensor_height_m, rng=rng
        )
        return {"data": sweep.points}


class MicrophoneSim(SimulatedSensor):
    """Mono float32 PCM of the world: chunks that tile the timeline on exact sample boundaries.

    Audio is a function of the sample index alone (not of the frame's `rng`): chunks join
    seamlessly and match the windows of the training data.
    """

    stream = 3
    handover = 1

    def __init__(self, world: World, config: MicrophoneSensor) -> None:
        self.sample_rate = config.sample_rate
        self.audio = AudioSynth(world, sample_rate=config.sample_rate)

    def frame_start(self, index: int, rate_hz: float) -> float:
        # Chunks start on exact sample boundaries so the stream has no gaps or overlaps.
        return round(index * self.sample_rate / rate_hz) / self.sample_rate

    def render(self, start: float, end: float, rng: np.random.Generator) -> dict[str, Any]:
        first = round(start * self.sample_rate)
        pcm, _, _ = self.window(first, round(end * self.sample_rate) - first)
        return {"data": pcm, "sample_rate": float(self.sample_rate)}

    def window(self, first: int, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Samples [first, first + n): the PCM [n] float32 in [-1, 1], and its parts (every
        object's sound, the background with self-noise), each [n] float64."""
        sig, noise = self.audio.scene_components(first, n)
        return np.clip(sig + noise, -1.0, 1.0).astype(np.float32), sig, noise


# Each takes its own settings: a camera's, a LiDAR's or a microphone's (`simulated_config`).
_SENSORS: dict[Modality, Callable[[World, Any], SimulatedSensor]] = {
    Modality.CAMERA: CameraSim,
    Modality.LIDAR: LidarSim,
    Modality.MICROPHONE: MicrophoneSim,
}


def simulated_sensor(
    modality: Modality, world: World, config: CameraSensor | LidarSensor | MicrophoneSensor
) -> SimulatedSensor:
    """The simulated `modality` sensor looking at `world`, with its settings `config`."""
    return _SENSORS[modality](world, config)


# --------------------------------------------------------------------------- the source


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
    """A simulated camera, microphone or LiDAR: pacing and bookkeeping around its `SimulatedSensor`."""

    backend = SIMULATED
    config: SimulatedConfig

    def __init__(
        self,
        config: SimCameraConfig | SimLidarConfig | SimMicrophoneConfig,
        *,
        modality: Modality | None = None,
    ) -> None:
        super().__init__(config, modality=modality)
        self.world = World(config.world)
        self.sensor = simulated_sensor(self.modality, self.world, config)
        self._index = 0  # not realtime: the next frame (realtime: the buffer says which)
        self._origin = config.start_s
        self._first_time = config.start_s
        self._offset = 0.0  # clock: monotonic: Unix time minus monotonic time, measured at open
        self._render_s = 0.05  # realtime: how long a frame takes to render (the recent slowest)
        # Realtime: the frames being rendered ahead on a thread of its own (the simulated device),
        # oldest first; a frame stays here until it is handed over. The buffer hands them over
        # when due (frame times are Unix times) and counts the ones a slow reader lost.
        self._device: ThreadPoolExecutor | None = None
        self._queue: deque[tuple[int, Future[Frame]]] = deque()
        self._buffer: DeviceBuffer[int] = DeviceBuffer(buffer_s=config.buffer_s, on_overrun=self._overrun)

    def _overrun(self, lost: int) -> None:
        self.stats.dropped["overrun"] += lost

    def open(self) -> None:
        self._origin = 0.0 if self.config.realtime else self.config.start_s
        self._index = 0
        self._first_time = self.frame_time(0)
        self._offset = time.time() - time.monotonic() if self.config.clock is Clock.MONOTONIC else 0.0
        self._buffer.stop()  # realtime: the first read places the stream on the clock
        self._queue.clear()

    def close(self) -> None:
        if self._device is not None:
            self._device.shutdown(wait=True, cancel_futures=True)
            self._device = None
        self._queue.clear()
        self._buffer.stop()

    def first_index(self, now: float) -> int:
        """Realtime: the first frame on the wall-clock grid at or after `now`."""
        return math.ceil(now * self.config.rate_hz)

    def frame_time(self, index: int) -> float:
        return self._origin + self.sensor.frame_start(index, self.config.rate_hz)

    def due_time(self, index: int) -> float:
        """Realtime: when frame `index` is complete and handed over (a chunk: at its last sample)."""
        return self.frame_time(index + self.sensor.handover)

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
        if self.config.realtime:
            return self._read_realtime(timeout)
        index = self._index
        if self._past_end(index):
            raise EndOfStream
        frame = self._make_frame(index, self.frame_time(index))
        self._index += 1
        self.stats.frames += 1
        return frame

    def _read_realtime(self, timeout: float | None) -> Frame:
        buffer = self._buffer
        deadline = buffer.deadline(timeout)
        if not buffer.streaming:
            # A device streams from the first read: the reader gets the next frame captured, not a
            # backlog of everything since `open` (which start-up may have left seconds behind).
            first = self.first_index(buffer.pacer.now())
            self._first_time = self.frame_time(first)
            buffer.start(self._upcoming(first))
        handed = buffer.next()
        if handed is None:
            raise EndOfStream
        due, index = handed
        frame = self._rendered(index, deadline, due)
        now = buffer.pacer.now()
        if due > now and (deadline is None or deadline > now):
            # The reader waits now, idle: the device renders ahead meanwhile, not while the frame
            # just handed over is preprocessed and sent by this process (they would share the
            # GIL, which a low-priority device thread, once preempted, holds long). A poll
            # (timeout 0) is part of that hand-over.
            self._schedule(index)
        buffer.hand_over(due, deadline=deadline, what=self._what())  # the frame stays queued on timeout
        self._queue.popleft()
        self.stats.frames += 1
        return frame

    def _upcoming(self, first: int) -> Iterator[tuple[float, int]]:
        """Realtime: (due time, index) of every frame from `first` to the end of the stream."""
        index = first
        while not self._past_end(index):
            yield self.due_time(index), index
            index += 1

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
        horizon = self._buffer.pacer.now() + self._lead()
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
        wait = None if deadline is None else max(0.0, deadline - self._buffer.pacer.now())
        if not rendering.done():
            if wait == 0.0:
                raise self._buffer.not_due(due, what=self._what())  # a poll: nothing to hand over now
            self._schedule(index)  # the reader waits anyway: the device renders ahead meanwhile
        try:
            return rendering.result(timeout=wait)
        except FutureTimeout:
            raise self._buffer.not_due(due, what=self._what()) from None

    def _what(self) -> str:
        return f"{self.modality.value}/{self.sensor_id}"

    def _make_frame(self, index: int, t: float) -> Frame:
        """Frame `index` at scene time `t`: a pure function of (world seed, stream, index)."""
        rng = frame_rng(self.config.world.seed, self.sensor.stream, index)
        return Frame(
            modality=self.modality,
            sensor_id=self.sensor_id,
            timestamp=t - self._offset,
            # Realtime frames are captured on schedule; otherwise at the moment they are made.
            wall_time=t if self.config.realtime else time.time(),
            index=index,
            **self.sensor.render(t, self.frame_time(index + 1), rng),
        )
