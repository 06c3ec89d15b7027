"""The pipeline driver: builds the actor graph from a PipelineConfig and runs the loop.

```
SensorActor (per sensor) ─> FuserActor (per rig) ─> InferenceActor pool ─> OrderedSink
```

Every edge is bounded. What the loop asks of the actors depends on the delivery mode, and is
the `pipelines.drivers` driver's business (`DRIVERS[config.mode]`). Live: each sensor streams
its frames to its rig's fuser by itself, the fuser sends a tick straight to an inference actor
with room, and the driver long-polls each fuser for every fused sample with its prediction;
samples that found no room wait in the driver (`max_pending_samples`, then the oldest is
dropped, counted). Replay: the driver reads the sensors in timestamp lockstep so the fuser sees
the same streams every run, sends fixed batches to inference, and stops reading rather than
dropping. Dead actors are restarted by Ray; the driver restarts a sensor's stream (live) or
resumes it where it stopped (replay) and resubmits the samples a dead inference actor held. The
sink drops duplicates by sequence number, so replay output is exactly-once. The books behind
all of this (queues, batch plans, reading plan, recovery) are `fusion.flow`'s plain classes.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from typing import Any, Protocol

import ray
from ray.exceptions import ActorDiedError, ActorUnavailableError, OwnerDiedError, RayActorError

from fusion.errors import InputError
from fusion.flow.dispatch import BatchPlanner, Dispatcher, InferencePool, PendingQueue, RigQueue
from fusion.flow.messages import Call, InferCall, ReadCall, SensorKey
from fusion.flow.replay import PushWindow
from fusion.sample import FusedSample, Prediction
from fusion.sinks.base import BackgroundSink, OrderedSink, Sink
from pipelines import faults
from pipelines.cluster import start_ray
from pipelines.config import PipelineConfig, replica_source
from pipelines.drivers import DRIVERS, MAX_PUSHES
from pipelines.fuser_actor import FuserActor
from pipelines.inference_actor import InferenceActor
from pipelines.metrics import DriverMetrics, InstrumentedSink
from pipelines.preflight import (
    PipelineStartError,
    check_resources,
    expand_rigs,
    gpus_per_actor,
    inference_placement,
    live_line,
    validate,
)
from pipelines.run_state import InferenceHandle, RigHandle, RunStats, SensorHandle, starved_modalities
from pipelines.sensor_actor import SensorActor, SensorNotStarted

log = logging.getLogger(__name__)
ACTOR_LOST = (RayActorError, ActorDiedError, ActorUnavailableError, SensorNotStarted)


class RunObserver(Protocol):
    """Sees the run from the driver's loop (the demo page): both calls must return at once."""

    def on_sample(self, sample: FusedSample) -> None:
        """Every FusedSample as it leaves its fuser, before inference (and before any live drop)."""

    def on_prediction(self, prediction: Prediction) -> None:
        """Every Prediction as it comes back, in completion order (not sequence order)."""


class PipelineRunner:
    """Start with `start()`, then `run()` until the sources end, `duration_s` passes, or `stop()`."""

    def __init__(
        self,
        config: PipelineConfig,
        sink: Sink,
        *,
        address: str | None = None,
        status: bool = True,
        observer: RunObserver | None = None,
    ) -> None:
        self.config = config
        self.observer = observer
        self.driver = DRIVERS[config.mode](self)
        # (rig id, sensor id) switched off: replaced under the lock, never mutated, so the loop
        # reads it without one while other threads switch sensors.
        self.disabled: frozenset[SensorKey] = frozenset()
        self._disabled_lock = threading.Lock()
        # Live: a slow sink must not stall the loop that reads the sensors, so it is written on
        # its own thread behind a bounded queue. Replay: inline, so a slow sink slows the replay.
        self._writer: BackgroundSink | None = None
        if not self.driver.lossless:
            self._writer = BackgroundSink(InstrumentedSink(sink), capacity=config.flow.max_sink_queue)
            self.sink = OrderedSink(self._writer)
        else:
            self.sink = OrderedSink(InstrumentedSink(sink))
        self.metrics = DriverMetrics()
        self.address = address
        self.show_status = status
        self.stats = RunStats()
        self.rigs: list[RigHandle] = []
        self.pool: list[InferenceHandle] = []
        # Calls in flight at each inference actor, and which batches go where (`fusion.flow`).
        self.inference = InferencePool(
            slots=config.inference.actors, max_in_flight=config.flow.max_in_flight_batches
        )
        self._dispatcher = Dispatcher(
            pool=self.inference,
            planner=BatchPlanner(size=config.inference.max_batch_size, fixed=self.driver.lossless),
        )
        self._stop = threading.Event()
        self._own_ray = False
        self.inflight: dict[Any, Call] = {}  # Ray reference -> the call it answers

    # ---- start-up: the graph -------------------------------------------------------------
    def start(self) -> None:
        """Validate, connect to Ray, start every actor; any problem fails here, naming its key."""
        validate(self.config)
        if start_ray(self.config.metrics, self.address):
            self._own_ray = True
        self.node_watch = faults.NodeWatch()
        check_resources(self.config, progress=live_line if self.show_status else None)
        try:
            self._start_inference()
            self._start_rigs()
        except BaseException as err:
            self._kill_actors()
            if isinstance(err, ray.exceptions.RayTaskError):
                cause = err.cause if err.cause is not None else err
                raise PipelineStartError(str(cause).strip().splitlines()[-1]) from None
            raise

    def _start_inference(self) -> None:
        inf = self.config.inference
        gpus = gpus_per_actor(self.config)
        device = inf.device if inf.device != "auto" or gpus > 0 else "cpu"
        for strategy in inference_placement(self.config):
            actor = InferenceActor.options(  # type: ignore[attr-defined]  # added by @ray.remote
                num_gpus=gpus,
                num_cpus=inf.num_cpus,
                resources=dict(inf.resources),
                scheduling_strategy=strategy,
                max_restarts=inf.max_restarts,
                max_concurrency=4 * self.config.inference.max_batch_size,
            ).remote(
                model=self.config.model.model_dump(),
                device=device,
                max_batch_size=inf.max_batch_size,
                max_wait_ms=inf.max_wait_ms,
            )
            self.pool.append(InferenceHandle(actor=actor))
        infos = ray.get([h.actor.info.remote() for h in self.pool], timeout=600)
        for h, info in zip(self.pool, infos, strict=True):
            h.info = info
        self.restarts = faults.RestartCounter(self)
        if not self.driver.lossless and self.config.flow.local_link:
            links = ray.get([h.actor.listen.remote() for h in self.pool], timeout=120)
            for h, link in zip(self.pool, links, strict=True):
                h.link = (link[0], link[1])
        log.info(
            "inference: %d actor(s) on %s, model %s",
            len(self.pool),
            infos[0]["device"],
            infos[0]["model_version"],
        )

    def _start_rigs(self) -> None:
        flow = self.config.flow
        speed = self.config.speed if self.driver.lossless else None  # replay pacing
        pools = []
        for rid, rig, replica in expand_rigs(self.config):
            sensors = []
            for sensor_id, spec in rig.sensors.items():
                options: dict[str, Any] = {
                    "max_restarts": flow.max_restarts,
                    "num_cpus": flow.sensor_num_cpus,
                }
                if rig.resources:
                    options["resources"] = dict(rig.resources)
                actor = SensorActor.options(**options).remote(  # type: ignore[attr-defined]  # added by @ray.remote
                    rig=rid,
                    modality=spec.modality.value,
                    source=replica_source(spec.source, sensor_id, replica),
                    name=f"rigs[{rid}].sensors.{sensor_id}.source",
                    speed=speed,
                )
                sensors.append(
                    SensorHandle(rig=rid, sensor_id=sensor_id, modality=spec.modality.value, actor=actor)
                )
            fuser = FuserActor.options(  # type: ignore[attr-defined]  # added by @ray.remote
                max_restarts=flow.max_restarts, num_cpus=flow.fuser_num_cpus, resources=dict(rig.resources)
            ).remote(
                rig=rid,
                sensors={s.sensor_id: s.modality for s in sensors},
                sync=rig.sync,
                preprocess=rig.preprocess,
                lossless=self.driver.lossless,
            )
            pending = PendingQueue(capacity=flow.max_pending_samples, drop_oldest=not self.driver.lossless)
            window = PushWindow(max_pushes=MAX_PUSHES)
            self.rigs.append(RigHandle(id=rid, fuser=fuser, sensors=sensors, pending=pending, window=window))
            pools.append(
                fuser.set_pool.remote(
                    [h.actor for h in self.pool], flow.max_in_flight_batches, [h.link for h in self.pool]
                )
            )
        # Fail fast: every source opens now (missing file or device named), every fuser builds.
        ray.get([s.actor.start.remote() for r in self.rigs for s in r.sensors], timeout=120)
        for handle, how in zip(self.rigs, ray.get(pools, timeout=120), strict=True):
            if not self.driver.lossless:
                self.stats.inference_transport[handle.id] = how
        self.driver.begin()

    # ---- the loop -------------------------------------------------------------------------
    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def stop(self) -> None:
        self._stop.set()

    def set_sensor_enabled(self, rig: str, sensor_id: str, enabled: bool) -> None:
        """Switch a sensor off or on; callable from any thread, before or during `run()`.

        A switched-off sensor is still read, so its device never backs up, but its frames are
        discarded (counted as dropped, reason `sensor_off`): its fuser sees a silent stream and
        fuses the other sensors without it, exactly as if the device had failed.
        """
        known = {(rid, sid) for rid, rc, _ in expand_rigs(self.config) for sid in rc.sensors}
        if (rig, sensor_id) not in known:
            raise InputError(f"no sensor {sensor_id!r} in rig {rig!r}")
        key = {(rig, sensor_id)}
        with self._disabled_lock:
            self.disabled = self.disabled - key if enabled else self.disabled | key
            for r in list(self.rigs):
                for s in r.sensors:
                    if s.key == (rig, sensor_id):
                        self.driver.set_enabled(s, enabled)

    def run(self) -> dict[str, Any]:
        self.stats.started = time.monotonic()
        deadline = time.monotonic() + self.config.duration_s if self.config.duration_s else math.inf
        last_status = time.monotonic()
        try:
            while not self.driver.done():
                if self._stop.is_set() or time.monotonic() >= deadline:
                    break
                self.driver.schedule()
                self._dispatch()
                for ref in self._ready(timeout=0.05):
                    self._complete(ref)
                if time.monotonic() - last_status >= 1.0:
                    self._export_metrics()
                    if self.show_status:
                        self._print_status()
                    last_status = time.monotonic()
        except faults.NodeLost as lost:  # what was predicted is kept; the summary says why it ended
            log.error("%s: ending the run", lost)
            self.stats.ended = str(lost)
            self._abandon(lost.rig)
            return self._shutdown()
        self._drain(timeout=10.0)
        return self._shutdown()

    def _ready(self, timeout: float) -> list[Any]:
        """Every finished reference: blocks up to `timeout` for the first, then takes all that are done."""
        refs = list(self.inflight)
        if not refs:
            time.sleep(timeout)
            return []
        first, rest = ray.wait(refs, num_returns=1, timeout=timeout)
        if not first or not rest:
            return first
        more, _ = ray.wait(rest, num_returns=len(rest), timeout=0)
        return first + more

    def _drain(self, timeout: float) -> None:
        """Stop reading; let fused samples and in-flight inference finish, up to `timeout` s."""
        end = time.monotonic() + timeout
        self.driver.drain_begin(timeout)
        while time.monotonic() < end:
            self.driver.drain_step()
            self._dispatch()
            waiting = [r for r, call in self.inflight.items() if not isinstance(call, ReadCall)]
            if not waiting and not any(r.pending for r in self.rigs):
                return
            for ref in self._ready(timeout=0.05):
                if isinstance(self.inflight[ref], ReadCall):
                    self.inflight.pop(ref)  # frames read after the stop are not fused
                else:
                    self._complete(ref)

    def sensor(self, key: SensorKey) -> SensorHandle:
        return next(s for r in self.rigs for s in r.sensors if s.key == key)

    def rig(self, rid: str) -> RigHandle:
        return next(r for r in self.rigs if r.id == rid)

    def _complete(self, ref: Any) -> None:
        call = self.inflight.pop(ref)
        try:
            result = ray.get(ref)
        except ACTOR_LOST as err:
            self._recover(call, err)
            return
        except OwnerDiedError as err:  # a prediction the fuser dispatched, and the fuser died
            assert isinstance(call, InferCall), call
            faults.fuser_lost(self, call.batch[0].rig, err)
        match call:
            case InferCall(slot=slot):
                self.on_predictions(slot, result)
            case _:
                self.driver.on_result(call, ref, result)

    def on_fused(self, rig: RigHandle, samples: list[FusedSample]) -> None:
        """`samples` from the fuser, waiting for the driver to send them to inference; live, the
        oldest beyond the bound are dropped (the sink is told not to wait for them)."""
        if self.observer is not None:
            for sample in samples:
                self.observer.on_sample(sample)
        for gone in rig.pending.extend(samples):
            self.sink.skip(gone.rig, gone.seq)
            self.stats.dropped["inference_behind"] += 1
        self.stats.max_pending = max(self.stats.max_pending, rig.pending.max_depth)

    def _dispatch(self) -> None:
        """Send what the dispatcher plans: the batches due, to actors with room."""
        rigs = [RigQueue(pending=r.pending, finished=r.window.finished) for r in self.rigs]
        for send in self._dispatcher.plan(rigs):
            ref = self.driver.send(self.pool[send.slot], send.batch)
            self.inflight[ref] = InferCall(slot=send.slot, batch=send.batch)

    def on_predictions(self, slot: int, result: Prediction | list[Prediction]) -> None:
        self.inference.answered(slot)
        preds = result if isinstance(result, list) else [result]
        for p in preds:
            if self.observer is not None:
                self.observer.on_prediction(p)
            before = self.sink.written
            self.sink.write(p)
            if self.sink.written > before:
                self.stats.predictions += 1
                self.stats.latencies.append(p.latency_s)

    # ---- faults (pipelines/faults.py) ------------------------------------------------------
    def _recover(self, call: Call, err: Exception) -> None:
        faults.recover(self, call, err)

    def restart_sensor(self, s: SensorHandle, err: Exception) -> None:
        faults.restart_sensor(self, s, err)

    def rig_resources(self, rid: str) -> dict[str, float]:
        return next(dict(rig.resources) for r, rig, _ in expand_rigs(self.config) if r == rid)

    def _abandon(self, rid: str) -> None:
        """Rig `rid` has nowhere to run: its actors are killed for good, so nothing waits on them."""
        for rig in self.rigs:
            if rig.id == rid:
                for actor in [rig.fuser, *(s.actor for s in rig.sensors)]:
                    ray.kill(actor, no_restart=True)

    # ---- reporting ------------------------------------------------------------------------
    def _count_sink_drops(self) -> None:
        if self._writer is not None and self._writer.dropped:
            self.stats.dropped["sink_behind"] = self._writer.dropped

    def status_line(self) -> str:
        self._count_sink_drops()
        return self.stats.status_line(sink_skipped=self.sink.skipped)

    def _export_metrics(self) -> None:
        """Queue depths, samples in flight and the driver's drop counts, for Prometheus."""
        self._count_sink_drops()
        self.stats.inference_restarts = self.restarts.poll()
        self.metrics.flow(
            buffered_frames=sum(r.window.buffered_frames for r in self.rigs),
            pending_samples=sum(len(r.pending) for r in self.rigs),
            in_flight_samples=sum(len(c.batch) for c in self.inflight.values() if isinstance(c, InferCall))
            + sum(r.linked for r in self.rigs),
            dropped=self.stats.dropped,
            sink_skipped=self.sink.skipped,
            resubmitted=self.stats.resubmitted,
        )

    def _print_status(self) -> None:
        live_line(self.status_line())

    def _shutdown(self) -> dict[str, Any]:
        for rig in self.rigs:
            for s in rig.sensors:
                try:
                    ray.get(s.actor.close.remote(), timeout=10)
                except Exception as err:  # a dead sensor has nothing left to close
                    log.debug("close %s: %s", s.sensor_id, err)
        self.sink.close()
        self._export_metrics()
        self.stats.predictions = self.sink.written - (self._writer.dropped if self._writer else 0)
        fusers: dict[str, Any] = {}
        for rig in self.rigs:  # what each rig's alignment used, dropped (and why) and left incomplete
            try:
                fusers[rig.id] = ray.get(rig.fuser.stats.remote(), timeout=10)
            except Exception as err:  # a lost fuser already failed the run; report what is left
                log.debug("fuser %s stats: %s", rig.id, err)
            try:
                ray.get(rig.fuser.close.remote(), timeout=10)
            except Exception as err:
                log.debug("fuser %s close: %s", rig.id, err)
        for h in self.pool:  # after the fusers: their links' socket directories go with them
            try:
                ray.get(h.actor.close.remote(), timeout=10)
            except Exception as err:
                log.debug("close inference actor: %s", err)
        self.stats.inference_restarts = self.restarts.poll(timeout=5.0)
        summary = self.summary()
        summary["fusers"] = fusers
        for line in starved_modalities(fusers):
            log.warning("%s", line)
        self._kill_actors()
        if self._own_ray:
            ray.shutdown()
        return summary

    def _kill_actors(self) -> None:
        for h in self.pool:
            ray.kill(h.actor)
        for rig in self.rigs:
            ray.kill(rig.fuser)
            for sensor in rig.sensors:
                ray.kill(sensor.actor)
        self.pool, self.rigs = [], []

    def summary(self) -> dict[str, Any]:
        return self.stats.summary(sink_skipped=self.sink.skipped, info=self.pool[0].info if self.pool else {})
