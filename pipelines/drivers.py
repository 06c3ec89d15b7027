"""How the runner's loop moves work in each delivery mode: `LiveDriver`, `ReplayDriver`.

The runner assembles the graph and runs the loop; `DRIVERS[config.mode]` decides what the loop
asks of the actors. A driver keeps its books in the run's `RunState` (queues, batch plans and
reading plan from `fusion.flow`), makes its calls through an `ActorPort` and hands lost actors
to `Recovery`: it imports no Ray, and is tested with a fake port.
"""

from __future__ import annotations

import logging
import time
from abc import ABC, abstractmethod
from typing import Any, ClassVar

from fusion.flow.messages import (
    Call,
    CollectCall,
    Collected,
    Dispatched,
    Failed,
    InferCall,
    Linked,
    Lost,
    Predicted,
    PushCall,
    Queued,
    ReadCall,
    StreamState,
    Taken,
    WatchCall,
)
from fusion.flow.replay import Finish, Push, lockstep_reads
from fusion.sample import FusedSample
from pipelines.config import Mode
from pipelines.port import ActorPort, Ref
from pipelines.recovery import Recovery
from pipelines.run_state import InferenceHandle, RigHandle, RunState, SensorHandle

log = logging.getLogger(__name__)
MAX_PUSHES = 4  # calls in flight to one fuser (replay: from the driver; live: from each sensor)
# Live: one `collect` per fuser is always in flight; it returns as soon as there is something
# for the driver (a prediction, a sample to dispatch, a loss), or after this long.
COLLECT_WAIT_S = 0.1
WATCH_EVERY_S = 1.0  # live: how often the driver checks that each sensor still streams


class Driver(ABC):
    """One delivery mode's part of the loop. Every method returns without waiting on an actor,
    except `begin`, `resume` and `drain_begin`, which wait (bounded) for the actors' answers."""

    lossless: ClassVar[bool]  # replay: nothing is ever dropped; live: the oldest is

    def __init__(self, state: RunState, port: ActorPort, recovery: Recovery) -> None:
        self.state, self.port, self.recovery = state, port, recovery

    @abstractmethod
    def begin(self) -> None:
        """Every actor has started: set the flow going."""

    @abstractmethod
    def schedule(self) -> None:
        """Each turn of the loop: make the calls that keep work coming to the fusers."""

    @abstractmethod
    def send(self, handle: InferenceHandle, batch: tuple[FusedSample, ...]) -> Ref:
        """Send `batch` to the inference actor `handle`; returns the reference of its predictions."""

    @abstractmethod
    def on_result(self, call: Call, ref: Ref, result: Any) -> None:
        """A call this driver made (not an `InferCall`) answered `result`."""

    @abstractmethod
    def resume(self, sensor: SensorHandle) -> None:
        """A restarted sensor actor has opened its source again."""

    @abstractmethod
    def drain_begin(self, timeout: float) -> None:
        """The run stops: no new frames, only what is already read finishes."""

    @abstractmethod
    def drain_step(self) -> None:
        """Each turn of the loop while draining."""

    @abstractmethod
    def done(self) -> bool:
        """The sources have ended and every sample has its prediction."""

    @abstractmethod
    def set_enabled(self, sensor: SensorHandle, enabled: bool) -> None:
        """A sensor was switched off or on (`RunState.disabled` already says so)."""


class LiveDriver(Driver):
    """Sensors stream to their fusers by themselves, fusers dispatch ticks with room; the driver
    long-polls each fuser (`collect`), sends on what found no room, drops the oldest when behind
    (counted), resubmits what a dead actor held and restarts streams that stopped."""

    lossless = False

    def begin(self) -> None:
        r = self.state
        links: list[tuple[str, str] | None] = (
            list(self.port.fuser_links(r.rigs)) if r.config.flow.local_link else [None] * len(r.rigs)
        )
        for rig, link in zip(r.rigs, links, strict=True):
            rig.link = link
            for sensor in rig.sensors:
                self._stream(rig, sensor)

    def _stream(self, rig: RigHandle, s: SensorHandle) -> None:
        """The sensor hands its frames to its rig's fuser from now on, by itself."""
        if s.key in self.state.disabled:
            self.port.set_enabled(s, False)
        how = self.port.stream_to(s, rig, self.state.config.flow.max_frames_per_read, MAX_PUSHES)
        log.info("sensor %s/%s streams to its fuser by %s", s.rig, s.sensor_id, how)
        self.state.stats.transport[f"{s.rig}/{s.sensor_id}"] = how

    def resume(self, sensor: SensorHandle) -> None:
        self._stream(self.state.rig(sensor.rig), sensor)

    def set_enabled(self, sensor: SensorHandle, enabled: bool) -> None:
        self.port.set_enabled(sensor, enabled)  # streaming sensors discard their frames themselves

    def schedule(self, *, force: bool = False, draining: bool = False) -> None:
        """One `collect` always in flight per fuser (a long poll: it returns as soon as the
        fuser has something for the driver); one `stream_state` per sensor every WATCH_EVERY_S
        (a sensor actor that died and was restarted streams again). `force`: a last collect
        that does not wait; `draining`: collects only while a rig awaits linked predictions."""
        r = self.state
        now = time.monotonic()
        collecting = {c.rig for c in r.calls(CollectCall)}
        watched = {c.sensor for c in r.calls(WatchCall)}
        for rig in r.rigs:
            if rig.id not in collecting and (not draining or rig.linked):
                wait = 0.0 if force else COLLECT_WAIT_S
                r.inflight[self.port.collect(rig, wait)] = CollectCall(rig=rig.id)
            for s in rig.sensors:
                if not (force or draining) and s.key not in watched and now - s.watched >= WATCH_EVERY_S:
                    s.watched = now
                    r.inflight[self.port.stream_state(s)] = WatchCall(sensor=s.key)

    def send(self, handle: InferenceHandle, batch: tuple[FusedSample, ...]) -> Ref:
        (sample,) = batch
        sample.stage_times["dispatched"] = time.time()
        return self.port.infer(handle, sample)

    def on_result(self, call: Call, ref: Ref, result: Any) -> None:
        match call:
            case CollectCall(rig=rid):
                self._on_collected(self.state.rig(rid), result)
            case WatchCall(sensor=key):
                self._on_watched(self.state.sensor(key), result)
            case _:
                raise AssertionError(f"live mode makes no {type(call).__name__}")

    def _on_collected(self, rig: RigHandle, items: list[Collected]) -> None:
        """What a fuser did since the last collect: samples it sent to inference itself come
        with the reference to their prediction, awaited here, or were sent over a local link,
        their predictions following in a later collect; either way a sample whose actor dies
        is resubmitted. Samples that found no room wait here."""
        r = self.state
        waiting, lost = [], []
        for item in items:
            match item:
                case Queued(sample=sample):
                    waiting.append(sample)
                case Dispatched(sample=sample, slot=slot, ref=ref):
                    self._dispatched_by_fuser(sample, slot)
                    r.inflight[ref] = InferCall(slot=slot, batch=(sample,))
                case Linked(sample=sample, slot=slot):
                    self._dispatched_by_fuser(sample, slot)
                    rig.linked += 1
                case Predicted(prediction=prediction, slot=slot):
                    rig.linked -= 1
                    r.on_predictions(slot, prediction)
                case Lost(sample=sample, slot=slot):
                    rig.linked -= 1
                    self.recovery.inference_lost(slot)
                    lost.append(sample)
                case Failed(sample=sample, why=why):
                    raise RuntimeError(f"rig {rig.id}: inference failed on sample {sample.seq}: {why}")
        if lost:
            self.recovery.resubmit(lost, "its link broke")
        r.on_fused(rig, waiting)

    def _dispatched_by_fuser(self, sample: FusedSample, slot: int) -> None:
        r = self.state
        r.inference.sent(slot)
        r.stats.fuser_dispatched += 1
        if r.observer is not None:
            r.observer.on_sample(sample)

    def _on_watched(self, s: SensorHandle, stream: StreamState) -> None:
        r = self.state
        s.on_state(stream)
        if discarded := sum(x.discarded for rig in r.rigs for x in rig.sensors):
            r.stats.dropped["sensor_off"] = discarded
        if stream.streaming or stream.ended or r.stopping:
            return
        # The stream stopped: an error in the device (named), or the actor was restarted.
        log.warning("sensor %s/%s stopped streaming (%s); restarting it", s.rig, s.sensor_id, stream.error)
        self.recovery.restart_sensor(s, RuntimeError(stream.error or "actor restarted"))
        self.resume(s)

    def drain_begin(self, timeout: float) -> None:
        """The sensors stop handing frames over; the last are collected."""
        r = self.state
        for ref, call in list(r.inflight.items()):
            if isinstance(call, WatchCall):
                r.inflight.pop(ref)
        self.port.stop_streams([s for rig in r.rigs for s in rig.sensors], timeout)
        self.schedule(force=True)

    def drain_step(self) -> None:
        self.schedule(draining=True)  # predictions of linked samples come by `collect`

    def done(self) -> bool:
        return False  # a live run ends by `stop()` or `duration_s`


class ReplayDriver(Driver):
    """The driver reads the sensors in timestamp lockstep (one read in flight each, frames handed
    to the fuser by reference, never fetched by the driver, up to MAX_PUSHES pushes in flight per
    fuser), sends fixed batches to inference, and stops reading rather than dropping. A sensor
    that died resumes where it stopped."""

    lossless = True

    def begin(self) -> None:
        """Nothing streams by itself: the first `schedule` reads."""

    def resume(self, sensor: SensorHandle) -> None:
        """The next `schedule` reads it again, from where `start(resume_from=...)` put it."""

    def set_enabled(self, sensor: SensorHandle, enabled: bool) -> None:
        """Its frames are still read, and dropped here (`_on_frames`) while it is off."""

    def drain_begin(self, timeout: float) -> None:
        """Reads in flight are dropped as they come back (the runner's `_drain`)."""

    def drain_step(self) -> None:
        """Pushes and inference calls in flight finish by themselves."""

    def schedule(self) -> None:
        r = self.state
        reading = {c.sensor for c in r.calls(ReadCall)}
        for rig in r.rigs:
            if rig.pending.full:
                continue  # backpressure: stop reading rather than dropping
            for s in lockstep_reads(rig.sensors, reading=reading):
                ref, frames = self.port.take(s, r.config.flow.max_frames_per_read, 0.05)
                r.inflight[ref] = ReadCall(sensor=s.key, frames=frames)

    def send(self, handle: InferenceHandle, batch: tuple[FusedSample, ...]) -> Ref:
        return self.port.infer_batch(handle, batch)

    def on_result(self, call: Call, ref: Ref, result: Any) -> None:
        match call:
            case ReadCall(sensor=key, frames=frames):
                self._on_frames(self.state.sensor(key), result, frames)
            case PushCall(rig=rid):
                rig = self.state.rig(rid)
                self.state.on_fused(rig, rig.window.answered(ref, result))
                self._push(rig)
            case _:
                raise AssertionError(f"replay mode makes no {type(call).__name__}")

    def _on_frames(self, s: SensorHandle, taken: Taken | None, frames: Ref) -> None:
        """A read came back: `taken` says how many frames (None: the stream ended); `frames` is
        the reference to them, handed on to the fuser."""
        r = self.state
        rig = r.rig(s.rig)
        if count := s.on_read(taken):
            if s.key in r.disabled:
                r.stats.dropped["sensor_off"] += count
                r.stats.sensor_off[(s.rig, s.modality)] += count
            else:
                rig.window.buffer(frames, count)
        self._push(rig)

    def _push(self, rig: RigHandle) -> None:
        match rig.window.next(all_ended=all(s.ended for s in rig.sensors)):
            case Push(frames=frames):
                ref = self.port.push(rig, frames)  # references: the fuser resolves them
            case Finish():
                ref = self.port.finish(rig)
            case None:
                return
        rig.window.sent(ref)
        self.state.inflight[ref] = PushCall(rig=rig.id)

    def done(self) -> bool:
        r = self.state
        return all(rig.window.finished and not rig.pending for rig in r.rigs) and not r.inflight


DRIVERS: dict[Mode, type[Driver]] = {Mode.LIVE: LiveDriver, Mode.REPLAY: ReplayDriver}
