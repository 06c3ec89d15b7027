"""Ray actors: thin shells around the plain classes in `fusion/`.

Each actor's contract is written on it; the logic it wraps is tested without Ray.
"""

from __future__ import annotations

import asyncio
import math
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import ray
import torch

from fusion.batching import DynamicBatcher
from fusion.fuser import Fuser
from fusion.inference import InferenceEngine, Prediction
from fusion.sample import Frame, FusedSample, Modality
from fusion.sensors import EndOfStream, Source, make_source
from pipelines.local_link import FrameClient, FrameServer, LinkError
from pipelines.metrics import FuserMetrics, InferenceMetrics, SourceMetrics
from pipelines.models import load_model


class SensorNotStarted(RuntimeError):
    """A (restarted) sensor actor was asked for frames before `start`."""


class Pacer:
    """Replay pacing: frame timestamps mapped onto the wall clock at `speed` (None: no waiting)."""

    def __init__(self, speed: float | None) -> None:
        self.speed = speed
        self._anchor: tuple[float, float] | None = None  # (first frame time, monotonic at it)

    def delay(self, timestamp: float) -> float:
        """Seconds until a frame stamped `timestamp` is due (<= 0: now); the first one anchors."""
        if self.speed is None:
            return 0.0
        if self._anchor is None:
            self._anchor = (timestamp, time.monotonic())
        return self._anchor[1] + (timestamp - self._anchor[0]) / self.speed - time.monotonic()


@ray.remote
class SensorActor:
    """One sensor's source.

    `read(max_frames, timeout_s)` returns up to `max_frames` frames in capture order: `[]` when a
    live source gave nothing within `timeout_s`, `None` once a finite source has ended. Replay
    sources are paced by `speed`. After a restart, `start(resume_from=k)` skips the k frames
    already delivered, so a replay continues exactly where it stopped.
    """

    def __init__(
        self, *, rig: str, modality: str, source: dict[str, Any], name: str, speed: float | None
    ) -> None:
        self.name = name
        self.source: Source = make_source(modality, source, source=name)
        self.metrics = SourceMetrics(rig=rig, modality=modality)
        self.pacer = Pacer(speed)
        self.delivered = 0
        self.ended = False
        self.started = False
        self._held: Frame | None = None  # read from the source, not due yet (paced replay)
        # Live: the thread that reads the device and hands frames to the fuser (`stream_to`).
        self._streamer: threading.Thread | None = None
        self._stop_stream = threading.Event()
        self.stream_error: str | None = None
        self.enabled = True  # switched off: frames are read (the device never backs up) and dropped
        self.newest = -math.inf  # timestamp of the newest frame read
        self.discarded = 0

    def start(self, resume_from: int = 0) -> int:
        """Open the source (fails naming the file or device); returns frames skipped to resume."""
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
        """Waits up to `timeout_s` for the first frame, then takes only those already due.

        It returns as soon as it has something: a frame never waits in the actor for the
        ones after it, so live latency gains nothing from this call but its Ray round trip.
        """
        if not self.started:
            raise SensorNotStarted(f"{self.name}: read before start (the actor was restarted)")
        if self.ended:
            return None
        frames: list[Frame] = []
        deadline = time.monotonic() + timeout_s
        while len(frames) < max_frames:
            frame = self._held
            self._held = None
            if frame is None:
                try:
                    frame = self.source.read(
                        timeout=max(0.0, deadline - time.monotonic()) if not frames else 0.0
                    )
                except TimeoutError:
                    break
                except EndOfStream:
                    self.ended = True
                    break
            delay = self.pacer.delay(frame.timestamp)
            if delay > 0 and (frames or delay > deadline - time.monotonic()):
                self._held = frame  # paced replay: not due yet, it opens the next read
                if not frames:
                    time.sleep(max(0.0, deadline - time.monotonic()))
                break
            if delay > 0:
                time.sleep(delay)
            frames.append(frame)
        self.delivered += len(frames)
        if frames:
            self.newest = frames[-1].timestamp
        self.metrics.record(len(frames), self.source.stats)
        if not frames and self.ended:
            return None
        return frames

    @ray.method(num_returns=2)  # type: ignore[misc]  # ray.method is untyped
    def take(self, max_frames: int, timeout_s: float) -> tuple[tuple[int, float] | None, list[Frame]]:
        """`read` split for the driver: (how many frames, the newest one's timestamp), or None
        once the source has ended, and the frames. The driver waits on the first and hands the
        second to the fuser by reference, so frames go from the sensor to its fuser (on a
        cluster, within the rig's node) without passing through the driver."""
        frames = self.read(max_frames, timeout_s)
        if frames is None:
            return None, []
        return (len(frames), frames[-1].timestamp if frames else -math.inf), frames

    def stream_to(
        self, fuser: Any, max_frames: int, max_pushes: int, link: tuple[str, str] | None = None
    ) -> str:
        """Live: from now on a thread of this actor reads the device and hands every frame to
        `fuser.push_from` as soon as it is captured: one Ray hop from the device to its fuser,
        with no round trip through the driver per read. At most `max_pushes` hand-overs are in
        flight; past that the thread waits, and the device's own buffer takes the backlog
        (and counts what it overwrites), so a stalled fuser never makes the sensor block.

        `link` is the fuser's (node id, socket path) from `FuserActor.listen`: on the same node
        frames go over that socket (`pipelines.local_link`) instead of as Ray calls, which cost
        far more here than the frames' bytes. Returns how frames travel: "socket" or "ray"."""
        if not self.started:
            raise SensorNotStarted(f"{self.name}: stream_to before start (the actor was restarted)")
        self.stop_stream()
        self._stop_stream.clear()
        self.stream_error = None
        client = None
        if link is not None and link[0] == ray.get_runtime_context().get_node_id():
            try:
                client = FrameClient(link[1])
            except LinkError as err:  # Ray calls still work
                self.stream_error = f"{err}; frames go as Ray calls"
        self._streamer = threading.Thread(
            target=self._stream,
            args=(fuser, client, max_frames, max_pushes),
            name=f"stream-{self.name}",
            daemon=True,
        )
        self._streamer.start()
        return "ray" if client is None else "socket"

    def _stream(self, fuser: Any, client: FrameClient | None, max_frames: int, max_pushes: int) -> None:
        in_flight: list[Any] = []
        try:
            while not self._stop_stream.is_set():
                frames = self.read(max_frames, 0.05)
                if frames is None:
                    return  # a finite source ended
                if not frames:
                    continue
                if not self.enabled:
                    self.discarded += len(frames)
                    self.source.stats.dropped["sensor_off"] += len(frames)
                    continue
                if client is not None:
                    client.send(frames)  # blocks while the fuser is behind: the device buffer overruns
                    continue
                in_flight.append(fuser.push_from.remote(frames))
                _, in_flight = ray.wait(in_flight, num_returns=len(in_flight), timeout=0)
                if len(in_flight) >= max_pushes:
                    _, in_flight = ray.wait(in_flight, num_returns=len(in_flight) - max_pushes + 1)
        except Exception as err:  # reported by `stream_state`; the driver restarts the stream
            self.stream_error = f"{type(err).__name__}: {err}"
        finally:
            if client is not None:
                client.close()

    def stream_state(self) -> dict[str, Any]:
        """Live: whether the stream runs, why it stopped, and what this sensor delivered and discarded."""
        return {
            "streaming": self._streamer is not None and self._streamer.is_alive(),
            "error": self.stream_error,
            "ended": self.ended,
            "delivered": self.delivered,
            "discarded": self.discarded,
            "newest": self.newest,
        }

    def set_enabled(self, enabled: bool) -> None:
        self.enabled = enabled

    def stop_stream(self) -> None:
        self._stop_stream.set()
        if self._streamer is not None:
            self._streamer.join(timeout=5.0)
            self._streamer = None

    def stats(self) -> dict[str, Any]:
        s = self.source.stats
        return {
            "frames": s.frames,
            "errors": dict(s.errors),
            "dropped": dict(s.dropped),
            "reconnects": s.reconnects,
            "delivered": self.delivered,
        }

    def close(self) -> None:
        self.stop_stream()
        self.source.close()

    def node_id(self) -> str:
        return ray.get_runtime_context().get_node_id()


@ray.remote
class FuserActor:
    """One rig's synchronizer and preprocessors.

    Replay: `push(frames)` takes frames of any of the rig's sensors, in any order, and returns
    the FusedSamples that became ready; `finish()` returns the rest at end of stream.

    Live: the rig's sensors call `push_from` themselves as frames are captured, and a tick goes
    from here straight to an inference actor of the pool given by `set_pool`: frames cross one
    Ray hop to the fuser and a fused sample one more to the model, none through the driver. The
    driver keeps flow control and recovery: `collect` hands it every sample with its
    prediction's reference (it resubmits a sample whose actor died, and sends on, or drops
    when behind, those that found no actor with room).
    """

    def __init__(
        self,
        *,
        rig: str,
        sensors: dict[str, str],
        sync: dict[str, Any],
        preprocess: dict[str, dict],
        lossless: bool,
    ) -> None:
        self.fuser = Fuser(
            rig=rig,
            sensors={k: Modality(v) for k, v in sensors.items()},
            sync=sync or None,
            preprocess={Modality(k): v for k, v in preprocess.items()},
            lossless=lossless,
        )
        self.fuser.warm_up()  # at start-up, not during the first tick
        self.metrics = FuserMetrics(rig=rig)
        self.pool: list[Any] = []
        self.max_in_flight = 1
        # Live: sensors on this node hand frames over on threads of a FrameServer, others as Ray
        # calls on the actor's thread: one lock keeps the fuser's state whole.
        self._lock = threading.Lock()
        self._server: FrameServer | None = None
        self._dispatched: list[list[Any]] = []  # per pool index: predictions this fuser awaits
        # Live: fused samples waiting for the driver's `collect`, each with the reference to its
        # prediction and its pool index when this fuser sent it to inference itself.
        self._outbox: list[tuple[FusedSample, Any, int | None]] = []

    def set_pool(self, pool: list[Any], max_in_flight: int = 1) -> None:
        """The inference actors `push_from` may send to, by index, keeping at most
        `max_in_flight` of its own samples at each."""
        self.pool = list(pool)
        self.max_in_flight = max_in_flight
        self._dispatched = [[] for _ in self.pool]

    def listen(self) -> tuple[str, str]:
        """Live: open the local link for sensors on this node; returns (node id, socket path)."""
        if self._server is None:
            self._server = FrameServer(self.push_from, name=f"fuser-{self.fuser.rig}")
        return ray.get_runtime_context().get_node_id(), self._server.path

    def push_from(self, frames: list[Frame]) -> None:
        """Live: a sensor's frames, straight from its actor (a Ray call, or its local link). A
        tick they complete goes on at once to the least busy inference actor with room (at most
        `max_in_flight` of this fuser's samples each), else waits for the driver; either way it
        goes to the outbox for `collect`."""
        with self._lock:
            self._fuse(frames)

    def _fuse(self, frames: list[Frame]) -> None:
        samples = self.fuser.push(frames)
        self.metrics.record(self.fuser)
        for sample in samples:
            slot = self._free_slot()
            ref = None
            if slot is not None:
                sample.stage_times["dispatched"] = time.time()
                ref = self.pool[slot].infer.remote(sample)
                self._dispatched[slot].append(ref)
            self._outbox.append((sample, ref, slot))

    def _free_slot(self) -> int | None:
        for i, refs in enumerate(self._dispatched):
            if refs:
                _, self._dispatched[i] = ray.wait(refs, num_returns=len(refs), timeout=0)
        if not self._dispatched:
            return None
        i = min(range(len(self._dispatched)), key=lambda k: len(self._dispatched[k]))
        return i if len(self._dispatched[i]) < self.max_in_flight else None

    def collect(self) -> list[tuple[FusedSample, Any, int | None]]:
        """Live: the outbox, oldest first, emptied: (sample, prediction reference, pool index),
        the last two None for a sample the driver must send to inference itself."""
        with self._lock:
            out, self._outbox = self._outbox, []
        return out

    def push(self, *frame_lists: list[Frame]) -> list[FusedSample]:
        """Replay: fuse the frames (lists of them, as sensors' reads gave them); the samples ready."""
        samples = self.fuser.push([f for frames in frame_lists for f in frames])
        self.metrics.record(self.fuser)
        return samples

    def finish(self) -> list[FusedSample]:
        samples = self.fuser.finish()
        self.metrics.record(self.fuser)
        return samples

    def close(self) -> None:
        """Close the local link (its socket directory goes with it)."""
        if self._server is not None:
            self._server.close()
            self._server = None

    def stats(self) -> dict[str, Any]:
        with self._lock:
            out = self.fuser.stats_dict()
        if self._server is not None and self._server.errors:
            out["link_errors"] = list(self._server.errors)
        return out


@ray.remote
class InferenceActor:
    """The Perceiver on this actor's device (GPU when it was given one, else CPU).

    `infer(sample)` is dynamically batched with concurrent calls (max batch size, max wait);
    `infer_batch(samples)` runs exactly the batch given (replay: fixed batches keep results
    byte-identical from run to run). Both return Predictions; a bad sample gets one with
    `error` set instead of failing its batch.
    """

    def __init__(
        self, *, model: dict[str, Any], device: str, max_batch_size: int, max_wait_ms: float
    ) -> None:
        net, version = load_model(model)
        self.engine = InferenceEngine(net, model_version=version, device=device)
        self.engine.warm_up()  # the slow first forward happens now, not on the first sample
        self.metrics = InferenceMetrics(self.engine)
        # One thread runs the model so the event loop keeps accepting samples meanwhile.
        self._executor = ThreadPoolExecutor(max_workers=1)
        self.batcher: DynamicBatcher[FusedSample, Prediction] = DynamicBatcher(
            self._run, max_batch_size=max_batch_size, max_wait_s=max_wait_ms / 1000
        )

    async def _run(self, samples: list[FusedSample]) -> list[Prediction]:
        return await asyncio.get_running_loop().run_in_executor(
            self._executor, self.metrics.timed_predict, samples
        )

    async def infer(self, sample: FusedSample) -> Prediction:
        return await self.batcher.submit(sample)

    async def infer_batch(self, samples: list[FusedSample]) -> list[Prediction]:
        return await self._run(samples)

    async def info(self) -> dict[str, Any]:
        params = sum(p.numel() for p in self.engine.model.parameters())
        return {
            "device": str(self.engine.device),
            "model_version": self.engine.model_version,
            "model": self.engine.model.config.name,
            "class_names": self.engine.class_names,
            "parameters": params,
            "torch_threads": torch.get_num_threads(),  # Ray sets it from the actor's num_cpus
            "node_id": ray.get_runtime_context().get_node_id(),
            "pid": __import__("os").getpid(),
        }
