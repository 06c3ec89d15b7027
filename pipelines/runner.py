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
all of this are one `RunState` (`pipelines.run_state`); the drivers and `Recovery` decide over
it and reach the actors through an `ActorPort` (`RayPort` here), so they are tested without Ray.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from typing import Any

import ray

from fusion.flow.dispatch import BatchPlanner, Dispatcher, PendingQueue, RigQueue
from fusion.flow.messages import InferCall, ReadCall
from fusion.flow.replay import PushWindow
from fusion.fuser import FuserStats
from fusion.model_spec import ResolvedModel
from fusion.sinks.base import BackgroundSink, OrderedSink, Sink
from pipelines.cluster import start_ray
from pipelines.config import PipelineConfig, expand_rigs, replica_source
from pipelines.drivers import DRIVERS, MAX_PUSHES, Driver
from pipelines.fuser_actor import FuserActor
from pipelines.inference_actor import InferenceActor
from pipelines.metrics.recorders import DriverMetrics
from pipelines.metrics.sink import InstrumentedSink
from pipelines.port import ActorLost, OwnerLost
from pipelines.preflight import (
    PipelineStartError,
    check_resources,
    gpus_per_actor,
    inference_placement,
    live_line,
    validate,
)
from pipelines.ray_port import RayPort
from pipelines.recovery import NodeLost, Recovery
from pipelines.run_state import (
    InferenceHandle,
    RigHandle,
    RunObserver,
    RunState,
    SensorHandle,
    starved_modalities,
)
from pipelines.sensor_actor import SensorActor

log = logging.getLogger(__name__)


class PipelineRunner:
    """Builds the actor graph of a pipeline config and runs its loop.

    Start with `start()`, then `run()` until the sources end, `duration_s` passes, or `stop()`
    (callable from any thread). `run()` returns the run's summary.

    Args:
        config: the validated pipeline config (`pipelines.config.load_pipeline`).
        sink: where predictions go; wrapped here so they arrive in sequence order, once each.
        model: the model, resolved already (`fusion.model_spec.resolve_model`); None: `start()`
            resolves `config.model`.
        address: a Ray cluster to join; None starts a local Ray (or joins RAY_ADDRESS).
        status: keep one live status line on stderr.
        observer: sees every fused sample and prediction from the loop (the demo page).
    """

    def __init__(
        self,
        config: PipelineConfig,
        sink: Sink,
        *,
        model: ResolvedModel | None = None,
        address: str | None = None,
        status: bool = True,
        observer: RunObserver | None = None,
    ) -> None:
        self.config = config
        self._model = model
        driver_cls = DRIVERS[config.mode]
        # Live: a slow sink must not stall the loop that reads the sensors, so it is written on
        # its own thread behind a bounded queue. Replay: inline, so a slow sink slows the replay.
        self._writer: BackgroundSink | None = None
        if driver_cls.lossless:
            ordered = OrderedSink(InstrumentedSink(sink))
        else:
            self._writer = BackgroundSink(InstrumentedSink(sink), capacity=config.flow.max_sink_queue)
            ordered = OrderedSink(self._writer)
        self.state = RunState(config=config, sink=ordered, observer=observer, lossless=driver_cls.lossless)
        self._driver_cls = driver_cls
        self._dispatcher = Dispatcher(
            pool=self.state.inference,
            planner=BatchPlanner(size=config.inference.max_batch_size, fixed=driver_cls.lossless),
        )
        self.metrics = DriverMetrics()
        self.address = address
        self.show_status = status
        self.port = RayPort()
        self._own_ray = False
        self._switch_lock = threading.Lock()
        # Built by `start()`, once Ray is up: recovery watches the nodes alive at the start.
        self._recovery: Recovery | None = None
        self._driver: Driver | None = None

    @property
    def rigs(self) -> list[RigHandle]:
        return self.state.rigs

    @property
    def pool(self) -> list[InferenceHandle]:
        return self.state.pool

    @property
    def recovery(self) -> Recovery:
        assert self._recovery is not None, "start() first"
        return self._recovery

    @property
    def driver(self) -> Driver:
        assert self._driver is not None, "start() first"
        return self._driver

    # ---- start-up: the graph -------------------------------------------------------------
    def start(self) -> None:
        """Validate, connect to Ray, check the cluster can place the run, start every actor;
        any problem fails here, naming its key (nothing is left running)."""
        self._model = validate(self.config, self._model)
        if start_ray(self.config.metrics, self.address):
            self._own_ray = True
        check_resources(self.config, progress=live_line if self.show_status else None)
        try:
            self._start_inference()
            self._recovery = Recovery(self.state, self.port)
            self._driver = self._driver_cls(self.state, self.port, self._recovery)
            self._start_rigs()
            self._driver.begin()
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
        actors = [
            InferenceActor.options(  # type: ignore[attr-defined]  # added by @ray.remote
                num_gpus=gpus,
                num_cpus=inf.num_cpus,
                resources=dict(inf.resources),
                scheduling_strategy=strategy,
                max_restarts=inf.max_restarts,
                max_concurrency=4 * inf.max_batch_size,
            ).remote(
                model=self._model,
                device=device,
                max_batch_size=inf.max_batch_size,
                max_wait_ms=inf.max_wait_ms,
                min_score=inf.min_score,
            )
            for strategy in inference_placement(self.config)
        ]
        infos = ray.get([a.info.remote() for a in actors], timeout=600)
        self.state.pool.extend(InferenceHandle(actor=a, info=i) for a, i in zip(actors, infos, strict=True))
        if not self._driver_cls.lossless and self.config.flow.local_link:
            links = ray.get([a.listen.remote() for a in actors], timeout=120)
            for h, link in zip(self.state.pool, links, strict=True):
                h.link = (link[0], link[1])
        log.info(
            "inference: %d actor(s) on %s, model %s", len(actors), infos[0].device, infos[0].model_version
        )

    def _start_rigs(self) -> None:
        flow = self.config.flow
        lossless = self._driver_cls.lossless
        speed = self.config.speed if lossless else None  # replay pacing
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
                    modality=spec.modality,
                    source=replica_source(spec.source, sensor_id, replica),
                    name=f"rigs[{rid}].sensors.{sensor_id}.source",
                    speed=speed,
                )
                sensors.append(
                    SensorHandle(rig=rid, sensor_id=sensor_id, modality=spec.modality, actor=actor)
                )
            fuser = FuserActor.options(  # type: ignore[attr-defined]  # added by @ray.remote
                max_restarts=flow.max_restarts, num_cpus=flow.fuser_num_cpus, resources=dict(rig.resources)
            ).remote(
                rig=rid,
                sensors={s.sensor_id: s.modality for s in sensors},
                sync=rig.sync,
                preprocess=rig.preprocess,
                lossless=lossless,
            )
            pending = PendingQueue(capacity=flow.max_pending_samples, drop_oldest=not lossless)
            window = PushWindow(max_pushes=MAX_PUSHES)
            self.state.rigs.append(
                RigHandle(id=rid, fuser=fuser, sensors=sensors, pending=pending, window=window)
            )
            pools.append(
                fuser.set_pool.remote(
                    [h.actor for h in self.state.pool],
                    flow.max_in_flight_batches,
                    [h.link for h in self.state.pool],
                )
            )
        # Fail fast: every source opens now (missing file or device named), every fuser builds.
        ray.get([s.actor.start.remote() for r in self.state.rigs for s in r.sensors], timeout=120)
        for handle, how in zip(self.state.rigs, ray.get(pools, timeout=120), strict=True):
            if not lossless:
                self.state.stats.inference_transport[handle.id] = how

    # ---- the loop -------------------------------------------------------------------------
    def stop(self) -> None:
        """Ask the loop to end (any thread): what is in flight finishes, outputs are flushed."""
        self.state.stop()

    def set_sensor_enabled(self, rig: str, sensor_id: str, enabled: bool) -> None:
        """Switch a sensor off or on; callable from any thread, before or during `run()`.

        A switched-off sensor is still read, so its device never backs up, but its frames are
        discarded (counted as dropped, reason `sensor_off`): its fuser sees a silent stream and
        fuses the other sensors without it, exactly as if the device had failed.
        """
        known = {(rid, sid) for rid, rc, _ in expand_rigs(self.config) for sid in rc.sensors}
        if (rig, sensor_id) not in known:
            raise ValueError(f"no sensor {sensor_id!r} in rig {rig!r}")
        key = {(rig, sensor_id)}
        with self._switch_lock:
            state = self.state
            state.disabled = state.disabled - key if enabled else state.disabled | key
            for r in list(state.rigs):
                for s in r.sensors:
                    if s.key == (rig, sensor_id) and self._driver is not None:
                        self._driver.set_enabled(s, enabled)

    def run(self) -> dict[str, Any]:
        """Loop until the sources end, `duration_s` passes or `stop()`; returns the summary."""
        state = self.state
        state.stats.started = time.monotonic()
        deadline = time.monotonic() + self.config.duration_s if self.config.duration_s else math.inf
        last_status = time.monotonic()
        try:
            while not self.driver.done():
                if state.stopping or time.monotonic() >= deadline:
                    break
                self.driver.schedule()
                self._dispatch()
                for ref in self._ready(timeout=0.05):
                    self._complete(ref)
                if time.monotonic() - last_status >= 1.0:
                    self._export_metrics()
                    if self.show_status:
                        live_line(self.status_line())
                    last_status = time.monotonic()
        except NodeLost as lost:  # what was predicted is kept; the summary says why it ended
            log.error("%s: ending the run", lost)
            state.stats.ended = str(lost)
            self.port.kill_rig(state.rig(lost.rig))
            return self._shutdown()
        self._drain(timeout=10.0)
        return self._shutdown()

    def _ready(self, timeout: float) -> list[Any]:
        """Every finished reference: blocks up to `timeout` for the first, then takes all that are done."""
        if not self.state.inflight:
            time.sleep(timeout)
            return []
        return self.port.ready(list(self.state.inflight), timeout)

    def _drain(self, timeout: float) -> None:
        """Stop reading; let fused samples and in-flight inference finish, up to `timeout` s."""
        end = time.monotonic() + timeout
        self.driver.drain_begin(timeout)
        while time.monotonic() < end:
            self.driver.drain_step()
            self._dispatch()
            waiting = [r for r, call in self.state.inflight.items() if not isinstance(call, ReadCall)]
            if not waiting and not any(r.pending for r in self.state.rigs):
                return
            for ref in self._ready(timeout=0.05):
                if isinstance(self.state.inflight[ref], ReadCall):
                    self.state.inflight.pop(ref)  # frames read after the stop are not fused
                else:
                    self._complete(ref)

    def _complete(self, ref: Any) -> None:
        call = self.state.inflight.pop(ref)
        try:
            result = self.port.result(ref)
        except ActorLost as err:
            if (sensor := self.recovery.recover(call, err)) is not None:
                self.driver.resume(sensor)
            return
        except OwnerLost as err:  # a prediction the fuser dispatched, and the fuser died
            assert isinstance(call, InferCall), call
            self.recovery.fuser_lost(call.batch[0].rig, err)
            return
        match call:
            case InferCall(slot=slot):
                self.state.on_predictions(slot, result)
            case _:
                self.driver.on_result(call, ref, result)

    def _dispatch(self) -> None:
        """Send what the dispatcher plans: the batches due, to actors with room."""
        rigs = [RigQueue(pending=r.pending, finished=r.window.finished) for r in self.state.rigs]
        for send in self._dispatcher.plan(rigs):
            ref = self.driver.send(self.state.pool[send.slot], send.batch)
            self.state.inflight[ref] = InferCall(slot=send.slot, batch=send.batch)

    # ---- reporting ------------------------------------------------------------------------
    def _count_sink_drops(self) -> None:
        if self._writer is not None and self._writer.dropped:
            self.state.stats.dropped["sink_behind"] = self._writer.dropped

    def status_line(self) -> str:
        self._count_sink_drops()
        return self.state.stats.status_line(sink_skipped=self.state.sink.skipped)

    def _export_metrics(self) -> None:
        """Queue depths, samples in flight and the driver's drop counts, for Prometheus."""
        state = self.state
        self._count_sink_drops()
        if self._recovery is not None:
            state.stats.inference_restarts = self._recovery.restarts.poll()
        self.metrics.flow(
            buffered_frames=sum(r.window.buffered_frames for r in state.rigs),
            pending_samples=sum(len(r.pending) for r in state.rigs),
            in_flight_samples=state.in_flight_samples(),
            dropped=state.stats.dropped,
            sink_skipped=state.sink.skipped,
            resubmitted=state.stats.resubmitted,
            frames_off=state.stats.sensor_off,
        )

    def _shutdown(self) -> dict[str, Any]:
        state = self.state
        for rig in state.rigs:
            for s in rig.sensors:
                try:
                    ray.get(s.actor.close.remote(), timeout=10)
                except Exception as err:  # a dead sensor has nothing left to close
                    log.debug("close %s: %s", s.sensor_id, err)
        state.sink.close()
        self._export_metrics()
        state.stats.predictions = state.sink.written - (self._writer.dropped if self._writer else 0)
        fusers: dict[str, FuserStats] = {}
        for rig in state.rigs:  # what each rig's alignment used, dropped (and why) and left incomplete
            try:
                fusers[rig.id] = ray.get(rig.fuser.stats.remote(), timeout=10)
            except Exception as err:  # a lost fuser already failed the run; report what is left
                log.debug("fuser %s stats: %s", rig.id, err)
            try:
                ray.get(rig.fuser.close.remote(), timeout=10)
            except Exception as err:
                log.debug("fuser %s close: %s", rig.id, err)
        for h in state.pool:  # after the fusers: their links' socket directories go with them
            try:
                ray.get(h.actor.close.remote(), timeout=10)
            except Exception as err:
                log.debug("close inference actor: %s", err)
        if self._recovery is not None:
            state.stats.inference_restarts = self._recovery.restarts.poll(timeout=5.0)
        summary = self.summary()
        summary["fusers"] = {rid: stats.as_json() for rid, stats in fusers.items()}
        for line in starved_modalities(fusers):
            log.warning("%s", line)
        self._kill_actors()
        if self._own_ray:
            ray.shutdown()
        return summary

    def _kill_actors(self) -> None:
        for h in self.state.pool:
            ray.kill(h.actor)
        for rig in self.state.rigs:
            ray.kill(rig.fuser)
            for sensor in rig.sensors:
                ray.kill(sensor.actor)
        self.state.pool.clear()
        self.state.rigs.clear()

    def summary(self) -> dict[str, Any]:
        state = self.state
        return state.stats.summary(
            sink_skipped=state.sink.skipped, info=state.pool[0].info if state.pool else None
        )
