"""Ray actors: thin shells around the plain classes in `fusion/`.

Each actor's contract is written on it; the logic it wraps is tested without Ray.
"""

from __future__ import annotations

import asyncio
import math
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
        self.source.close()

    def node_id(self) -> str:
        return ray.get_runtime_context().get_node_id()


@ray.remote
class FuserActor:
    """One rig's synchronizer and preprocessors.

    `push(slots, frames)` takes frames of any of the rig's sensors, in any order, and returns
    the FusedSamples that became ready; `finish()` returns the rest at end of stream.

    Live mode: the driver grants `slots` with a push, and the first `len(slots)` samples ready go
    straight to the inference actors `pool[slots[i]]` (the pool given by `set_pool`): a fused
    sample then crosses one Ray hop to the model, not two through the driver. The driver keeps
    flow control and recovery: it gets each sample back with its prediction's reference.
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

    def set_pool(self, pool: list[Any]) -> None:
        """The inference actors `push` may send to, by index."""
        self.pool = list(pool)

    def push(
        self, slots: list[int], *frame_lists: list[Frame]
    ) -> tuple[list[FusedSample], list[ray.ObjectRef]]:
        """Fuse the frames, then `pool[slots[i]].infer(sample i)` for the oldest samples ready, one
        per slot; returns every sample and the prediction references of the dispatched ones (the
        first `len(refs)` samples). Samples beyond the slots are returned for the driver to queue."""
        samples = self.fuser.push([f for frames in frame_lists for f in frames])
        self.metrics.record(self.fuser)
        refs = []
        for sample, slot in zip(samples, slots, strict=False):
            sample.stage_times["dispatched"] = time.time()
            refs.append(self.pool[slot].infer.remote(sample))
        return samples, refs

    def finish(self) -> list[FusedSample]:
        samples = self.fuser.finish()
        self.metrics.record(self.fuser)
        return samples

    def stats(self) -> dict[str, Any]:
        return self.fuser.stats_dict()


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
