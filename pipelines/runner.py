"""The pipeline driver: builds the actor graph from a PipelineConfig and moves work along it.

```
SensorActor (per sensor) ─> FuserActor (per rig) ─> InferenceActor pool ─> OrderedSink
```

Every edge is bounded. Live: each sensor streams its frames to its rig's fuser by itself (up
to four hand-overs in flight; past that its device's buffer overruns, counted), the fuser sends
a tick straight to an inference actor with room (`max_in_flight_batches` of its samples each;
over a local link with the prediction coming back on it when both share a host, else as a Ray
call), and the driver long-polls each fuser (`collect`) for every fused sample with its
prediction, or its prediction's reference; samples that found no room wait in the driver
(`max_pending_samples`, then the oldest is dropped, counted). No frame and no tick passes
through the driver on its way to the model. Replay: the driver reads
the sensors in timestamp lockstep (one outstanding read each, frames handed to the fuser by
reference, never fetched by the driver, up to four pushes in flight per fuser) so the fuser sees
the same streams every run, sends fixed batches to inference, and stops reading rather than
dropping. Dead actors are restarted by Ray; the driver restarts a sensor's stream (live) or
resumes it where it stopped (replay) and resubmits the samples a dead inference actor held. The
sink drops duplicates by sequence number, so replay output is exactly-once.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any, Protocol

import ray
from ray.exceptions import ActorDiedError, ActorUnavailableError, OwnerDiedError, RayActorError

from fusion.config import ConfigError
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
    SensorKey,
    StreamState,
    Taken,
    WatchCall,
)
from fusion.sample import FusedSample, Prediction
from fusion.sensors import make_source
from fusion.sinks import BackgroundSink, OrderedSink, Sink
from pipelines.actors import FuserActor, SensorActor, SensorNotStarted
from pipelines.config import Mode, PipelineConfig, RigConfig, replica_source, rig_ids
from pipelines.inference_actor import InferenceActor
from pipelines.metrics import DriverMetrics, InstrumentedSink, ray_init_options
from pipelines.models import check_model, check_preprocess

log = logging.getLogger(__name__)
ACTOR_LOST = (RayActorError, ActorDiedError, ActorUnavailableError, SensorNotStarted)
REPLAY_LOOKAHEAD_S = 0.5  # how far a sensor may read ahead of the slowest one in replay
MAX_PUSHES = 4  # calls in flight to one fuser (replay: from the driver; live: from each sensor)
# Live: one `collect` per fuser is always in flight; it returns as soon as there is something
# for the driver (a prediction, a sample to dispatch, a loss), or after this long.
COLLECT_WAIT_S = 0.1
WATCH_EVERY_S = 1.0  # live: how often the driver checks that each sensor still streams


class PipelineStartError(RuntimeError):
    """An actor could not start (a missing file or device, a bad model); the message says which."""


class RunObserver(Protocol):
    """Sees the run from the driver's loop (the demo page): both calls must return at once."""

    def on_sample(self, sample: FusedSample) -> None:
        """Every FusedSample as it leaves its fuser, before inference (and before any live drop)."""

    def on_prediction(self, prediction: Prediction) -> None:
        """Every Prediction as it comes back, in completion order (not sequence order)."""


@dataclass
class SensorHandle:
    rig: str
    sensor_id: str
    modality: str
    actor: Any
    delivered: int = 0
    latest: float = -math.inf  # timestamp of the newest frame read
    ended: bool = False
    restarts: int = 0
    watched: float = 0.0  # live: monotonic time the last `stream_state` was sent
    discarded: int = 0  # live: frames dropped while switched off, as the actor last reported

    @property
    def key(self) -> SensorKey:
        return (self.rig, self.sensor_id)


@dataclass
class RigHandle:
    id: str
    fuser: Any
    sensors: list[SensorHandle]
    # (reference to a frame list, its length), waiting for the fuser: the frames themselves go
    # from the sensor actor to the fuser without the driver fetching them.
    buffered: list[tuple[Any, int]] = field(default_factory=list)
    pushes: deque[Any] = field(default_factory=deque)  # push/finish calls in flight, oldest first
    results: dict[Any, list[FusedSample]] = field(default_factory=dict)  # done, behind an older one
    finishing: bool = False  # `finish` was sent: nothing more is pushed
    link: tuple[str, str] | None = None  # live: the fuser's local link (node id, socket path)
    linked: int = 0  # live: samples the fuser sent over an inference actor's link, not yet answered
    finished: bool = False
    pending: deque[FusedSample] = field(default_factory=deque)  # fused, not yet submitted


@dataclass
class InferenceHandle:
    actor: Any
    in_flight: int = 0
    link: tuple[str, str] | None = None  # live: its local link (node id, socket path)
    info: dict[str, Any] = field(default_factory=dict)


@dataclass
class RunStats:
    started: float = field(default_factory=time.monotonic)
    predictions: int = 0
    dropped: Counter[str] = field(default_factory=Counter)
    resubmitted: int = 0
    fuser_dispatched: int = 0  # live: samples the fusers sent straight to inference
    sensor_restarts: int = 0
    max_pending: int = 0  # the most fused samples ever waiting in one rig: bounded by the config
    transport: dict[str, str] = field(default_factory=dict)  # live: "rig/sensor" -> socket | ray
    inference_transport: dict[str, list[str]] = field(default_factory=dict)  # live: rig -> per actor
    latencies: deque[float] = field(default_factory=lambda: deque(maxlen=2048))

    def percentile(self, q: float) -> float:
        data = sorted(self.latencies)
        return data[min(len(data) - 1, int(q * len(data)))] if data else math.nan


def _expand_rigs(config: PipelineConfig) -> list[tuple[str, RigConfig, int]]:
    """(rig id, rig config, replica index) for every rig, replicas expanded."""
    return [(rid, rig, k) for rig in config.rigs for k, rid in enumerate(rig_ids(rig))]


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
        # (rig id, sensor id) switched off: replaced under the lock, never mutated, so the loop
        # reads it without one while other threads switch sensors.
        self._disabled: frozenset[tuple[str, str]] = frozenset()
        self._disabled_lock = threading.Lock()
        # Live: a slow sink must not stall the loop that reads the sensors, so it is written on
        # its own thread behind a bounded queue. Replay: inline, so a slow sink slows the replay.
        self._writer: BackgroundSink | None = None
        if config.mode is Mode.LIVE:
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
        self._stop = threading.Event()
        self._own_ray = False
        self._inflight: dict[Any, Call] = {}  # Ray reference -> the call it answers

    # ---- start-up -------------------------------------------------------------------------
    def start(self) -> None:
        """Validate, connect to Ray, start every actor; any problem fails here, naming its key."""
        self._validate_sources()
        check_model(self.config.model.model_dump())
        self._validate_preprocess()
        if not ray.is_initialized():
            ray.init(
                address=self.address,
                log_to_driver=True,
                configure_logging=False,
                **ray_init_options(self.config.metrics, self.address),
            )
            self._own_ray = True
        self._check_resources()
        try:
            self._start_inference()
            self._start_rigs()
        except BaseException as err:
            self._kill_actors()
            if isinstance(err, ray.exceptions.RayTaskError):
                cause = err.cause if err.cause is not None else err
                raise PipelineStartError(str(cause).strip().splitlines()[-1]) from None
            raise

    def _validate_preprocess(self) -> None:
        """The rigs must feed the model as it was trained (the checkpoint records how)."""
        rigs = [(rid, rig.preprocess.as_mapping()) for rid, rig, _ in _expand_rigs(self.config)]
        try:
            check_preprocess(self.config.model.model_dump(), rigs)
        except ValueError as err:
            raise PipelineStartError(str(err)) from None

    def _validate_sources(self) -> None:
        """Backends and their keys are checked in the driver, before any actor exists."""
        for rid, rig, replica in _expand_rigs(self.config):
            for sensor_id, spec in rig.sensors.items():
                config = replica_source(spec.source, sensor_id, replica)
                make_source(spec.modality, config, source=f"rigs[{rid}].sensors.{sensor_id}.source")

    def _check_resources(self) -> None:
        """Requests the cluster can never satisfy would leave actors pending forever: refuse them."""
        total = ray.cluster_resources()
        wanted: list[tuple[str, str, float]] = [
            (f"rigs[{i}].resources.{name}", name, amount)
            for i, rig in enumerate(self.config.rigs)
            for name, amount in rig.resources.items()
        ]
        wanted += [(f"inference.resources.{n}", n, a) for n, a in self.config.inference.resources.items()]
        wanted += [
            ("inference.num_gpus", "GPU", self._gpus_per_actor()),
            ("inference.num_cpus", "CPU", self.config.inference.num_cpus),
        ]
        for key, name, amount in wanted:
            if amount > total.get(name, 0):
                raise ConfigError(
                    f"{key}: {amount} per actor requested, the cluster has {total.get(name, 0)}"
                )

    def _gpus_per_actor(self) -> float:
        want = self.config.inference.num_gpus
        if want is not None:
            return want
        return 1.0 if ray.cluster_resources().get("GPU", 0) >= 1 else 0.0

    def _start_inference(self) -> None:
        inf = self.config.inference
        gpus = self._gpus_per_actor()
        device = inf.device if inf.device != "auto" or gpus > 0 else "cpu"
        for _ in range(inf.actors):
            actor = InferenceActor.options(  # type: ignore[attr-defined]  # added by @ray.remote
                num_gpus=gpus,
                num_cpus=inf.num_cpus,
                resources=dict(inf.resources),
                scheduling_strategy="SPREAD",
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
        if self.config.mode is Mode.LIVE and self.config.flow.local_link:
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
        speed = self.config.speed if self.config.mode is Mode.REPLAY else None
        pools = []
        for rid, rig, replica in _expand_rigs(self.config):
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
                lossless=self.config.mode is Mode.REPLAY,
            )
            self.rigs.append(RigHandle(id=rid, fuser=fuser, sensors=sensors))
            pools.append(
                fuser.set_pool.remote(
                    [h.actor for h in self.pool], flow.max_in_flight_batches, [h.link for h in self.pool]
                )
            )
        # Fail fast: every source opens now (missing file or device named), every fuser builds.
        ray.get([s.actor.start.remote() for r in self.rigs for s in r.sensors], timeout=120)
        for handle, how in zip(self.rigs, ray.get(pools, timeout=120), strict=True):
            if self.config.mode is Mode.LIVE:
                self.stats.inference_transport[handle.id] = how
        if self.config.mode is Mode.LIVE:
            links = (
                ray.get([r.fuser.listen.remote() for r in self.rigs], timeout=120)
                if flow.local_link
                else [None] * len(self.rigs)
            )
            for handle, link in zip(self.rigs, links, strict=True):
                handle.link = None if link is None else (link[0], link[1])
                for sensor in handle.sensors:
                    self._stream(handle, sensor)

    def _stream(self, rig: RigHandle, s: SensorHandle) -> None:
        """Live: the sensor hands its frames to its rig's fuser from now on, by itself."""
        if (s.rig, s.sensor_id) in self._disabled:
            s.actor.set_enabled.remote(False)
        how = ray.get(
            s.actor.stream_to.remote(rig.fuser, self.config.flow.max_frames_per_read, MAX_PUSHES, rig.link),
            timeout=120,
        )
        log.info("sensor %s/%s streams to its fuser by %s", s.rig, s.sensor_id, how)
        self.stats.transport[f"{s.rig}/{s.sensor_id}"] = how

    # ---- the loop -------------------------------------------------------------------------
    def stop(self) -> None:
        self._stop.set()

    def set_sensor_enabled(self, rig: str, sensor_id: str, enabled: bool) -> None:
        """Switch a sensor off or on; callable from any thread, before or during `run()`.

        A switched-off sensor is still read, so its device never backs up, but its frames are
        discarded (counted as dropped, reason `sensor_off`): its fuser sees a silent stream and
        fuses the other sensors without it, exactly as if the device had failed.
        """
        known = {(rid, sid) for rid, rc, _ in _expand_rigs(self.config) for sid in rc.sensors}
        if (rig, sensor_id) not in known:
            raise ValueError(f"no sensor {sensor_id!r} in rig {rig!r}")
        key = {(rig, sensor_id)}
        with self._disabled_lock:
            self._disabled = self._disabled - key if enabled else self._disabled | key
            if self.config.mode is Mode.LIVE:  # streaming sensors discard their frames themselves
                for r in list(self.rigs):
                    for s in r.sensors:
                        if (s.rig, s.sensor_id) == (rig, sensor_id):
                            s.actor.set_enabled.remote(enabled)

    def run(self) -> dict[str, Any]:
        self.stats.started = time.monotonic()
        deadline = time.monotonic() + self.config.duration_s if self.config.duration_s else math.inf
        last_status = time.monotonic()
        while not self._done():
            if self._stop.is_set() or time.monotonic() >= deadline:
                break
            if self.config.mode is Mode.LIVE:
                self._schedule_collects()
            else:
                self._schedule_reads()
            self._schedule_inference()
            for ref in self._ready(timeout=0.05):
                self._complete(ref)
            if time.monotonic() - last_status >= 1.0:
                self._export_metrics()
                if self.show_status:
                    self._print_status()
                last_status = time.monotonic()
        self._drain(timeout=10.0)
        return self._shutdown()

    def _ready(self, timeout: float) -> list[Any]:
        """Every finished reference: blocks up to `timeout` for the first, then takes all that are done."""
        refs = list(self._inflight)
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
        if self.config.mode is Mode.LIVE:  # the sensors stop handing frames over; the last are collected
            for ref, call in list(self._inflight.items()):
                if isinstance(call, WatchCall):
                    self._inflight.pop(ref)
            try:
                ray.get([s.actor.stop_stream.remote() for r in self.rigs for s in r.sensors], timeout=timeout)
            except Exception as err:  # a lost sensor has nothing more to hand over
                log.debug("stop streams: %s", err)
            self._schedule_collects(force=True)
        while time.monotonic() < end:
            if self.config.mode is Mode.LIVE:  # predictions of linked samples come by `collect`
                self._schedule_collects(draining=True)
            self._schedule_inference()
            waiting = [r for r, call in self._inflight.items() if not isinstance(call, ReadCall)]
            if not waiting and not any(r.pending for r in self.rigs):
                return
            for ref in self._ready(timeout=0.05):
                if isinstance(self._inflight[ref], ReadCall):
                    self._inflight.pop(ref)  # frames read after the stop are not fused
                else:
                    self._complete(ref)

    def _done(self) -> bool:
        return all(r.finished and not r.pending for r in self.rigs) and not self._inflight

    def _schedule_reads(self) -> None:
        replay = self.config.mode is Mode.REPLAY
        busy = {c.sensor for c in self._inflight.values() if isinstance(c, ReadCall)}
        for rig in self.rigs:
            active = [s for s in rig.sensors if not s.ended]
            if replay and len(rig.pending) >= self.config.flow.max_pending_samples:
                continue  # backpressure: stop reading rather than dropping
            slowest = min((s.latest for s in active), default=math.inf)
            for s in active:
                if s.key in busy:
                    continue
                if replay and s.latest > slowest + REPLAY_LOOKAHEAD_S:
                    continue  # lockstep: the fuser gets every stream up to the same time
                ref, frames = s.actor.take.remote(self.config.flow.max_frames_per_read, 0.05)
                self._inflight[ref] = ReadCall(sensor=s.key, frames=frames)

    def _sensor(self, key: SensorKey) -> SensorHandle:
        return next(s for r in self.rigs for s in r.sensors if s.key == key)

    def _rig(self, rid: str) -> RigHandle:
        return next(r for r in self.rigs if r.id == rid)

    def _complete(self, ref: Any) -> None:
        call = self._inflight.pop(ref)
        try:
            result = ray.get(ref)
        except ACTOR_LOST as err:
            self._recover(call, err)
            return
        except OwnerDiedError as err:  # a prediction the fuser dispatched, and the fuser died
            assert isinstance(call, InferCall), call
            rig = call.batch[0].rig
            raise RuntimeError(f"rig {rig}: fuser actor lost; its alignment state is gone") from err
        match call:
            case ReadCall(sensor=key, frames=frames):
                self._on_frames(self._sensor(key), result, frames)
            case CollectCall(rig=rid):
                self._on_collected(self._rig(rid), result)
            case WatchCall(sensor=key):
                self._on_watched(self._sensor(key), result)
            case PushCall(rig=rid):
                self._on_pushed(self._rig(rid), ref, result)
            case InferCall(slot=slot):
                self._on_predictions(slot, result)

    def _schedule_collects(self, force: bool = False, draining: bool = False) -> None:
        """Live: one `collect` always in flight per fuser (a long poll: it returns as soon as the
        fuser has something for the driver); one `stream_state` per sensor every WATCH_EVERY_S
        (a sensor actor that died and was restarted streams again). `force`: a last collect
        that does not wait; `draining`: collects only while a rig awaits linked predictions."""
        now = time.monotonic()
        collecting = {c.rig for c in self._inflight.values() if isinstance(c, CollectCall)}
        watched = {c.sensor for c in self._inflight.values() if isinstance(c, WatchCall)}
        for rig in self.rigs:
            if rig.id not in collecting and (not draining or rig.linked):
                wait = 0.0 if force else COLLECT_WAIT_S
                self._inflight[rig.fuser.collect.remote(wait)] = CollectCall(rig=rig.id)
            for s in rig.sensors:
                if not (force or draining) and s.key not in watched and now - s.watched >= WATCH_EVERY_S:
                    s.watched = now
                    self._inflight[s.actor.stream_state.remote()] = WatchCall(sensor=s.key)

    def _on_collected(self, rig: RigHandle, items: list[Collected]) -> None:
        """Live: what a fuser did since the last collect (`fusion.flow.messages.Collected`): samples
        it sent to inference itself come with the reference to their prediction, awaited here,
        or were sent over a local link, their predictions following in a later collect; either
        way a sample whose actor dies is resubmitted. Samples that found no room wait here."""
        waiting, lost = [], []
        for item in items:
            match item:
                case Queued(sample=sample):
                    waiting.append(sample)
                case Dispatched(sample=sample, slot=slot, ref=ref):
                    self._fuser_dispatched(sample, slot)
                    self._inflight[ref] = InferCall(slot=slot, batch=(sample,))
                case Linked(sample=sample, slot=slot):
                    self._fuser_dispatched(sample, slot)
                    rig.linked += 1
                case Predicted(prediction=prediction, slot=slot):
                    rig.linked -= 1
                    self._on_predictions(slot, prediction)
                case Lost(sample=sample, slot=slot):
                    rig.linked -= 1
                    self.pool[slot].in_flight -= 1
                    lost.append(sample)
                case Failed(sample=sample, why=why):
                    raise RuntimeError(f"rig {rig.id}: inference failed on sample {sample.seq}: {why}")
        if lost:
            log.warning("inference actor lost; resubmitting %d sample(s) it had over its link", len(lost))
            self.stats.resubmitted += len(lost)
            rig.pending.extendleft(reversed(lost))
        self._on_fused(rig, waiting)

    def _fuser_dispatched(self, sample: FusedSample, slot: int) -> None:
        self.pool[slot].in_flight += 1
        self.stats.fuser_dispatched += 1
        if self.observer is not None:
            self.observer.on_sample(sample)

    def _on_watched(self, s: SensorHandle, state: StreamState) -> None:
        s.delivered = state.delivered
        s.discarded = state.discarded
        s.latest = state.newest
        if discarded := sum(x.discarded for r in self.rigs for x in r.sensors):
            self.stats.dropped["sensor_off"] = discarded
        if state.streaming or self._stop.is_set():
            return
        if state.ended:
            s.ended = True
            return
        # The stream stopped: an error in the device (named), or the actor was restarted.
        log.warning("sensor %s/%s stopped streaming (%s); restarting it", s.rig, s.sensor_id, state.error)
        self._restart_sensor(s, RuntimeError(state.error or "actor restarted"))

    def _on_frames(self, s: SensorHandle, read: Taken | None, frames: Any) -> None:
        """A read came back: `read` says how many frames, or is None at the end of the stream;
        `frames` is the reference to the frames."""
        rig = self._rig(s.rig)
        if read is None:
            s.ended = True
        elif read.count:
            count = read.count
            s.delivered += count
            s.latest = read.newest
            if (s.rig, s.sensor_id) in self._disabled:
                self.stats.dropped["sensor_off"] += count
                self.metrics.frames_dropped(rig=s.rig, modality=s.modality, reason="sensor_off", count=count)
            else:
                rig.buffered.append((frames, count))
        self._push(rig)

    def _push(self, rig: RigHandle) -> None:
        """Send the rig's buffered frames to its fuser, without waiting for the previous push: the
        fuser runs its calls in the order sent, so a tick whose last frame just came in is not
        held behind the round trip of an earlier push. At most `MAX_PUSHES` are in flight."""
        if rig.finishing or len(rig.pushes) >= MAX_PUSHES:
            return
        if rig.buffered:
            batch, rig.buffered = rig.buffered, []
            frames = [frames for frames, _ in batch]  # references: Ray resolves them in the fuser
            ref = rig.fuser.push.remote(*frames)
        elif all(s.ended for s in rig.sensors):
            ref = rig.fuser.finish.remote()
            rig.finishing = True
        else:
            return
        rig.pushes.append(ref)
        self._inflight[ref] = PushCall(rig=rig.id)

    def _on_pushed(self, rig: RigHandle, ref: Any, samples: list[FusedSample]) -> None:
        """Samples are taken in the order the pushes were sent (replay batches depend on it)."""
        rig.results[ref] = samples
        while rig.pushes and rig.pushes[0] in rig.results:
            self._on_fused(rig, rig.results.pop(rig.pushes.popleft()))
        self._push(rig)

    def _on_fused(self, rig: RigHandle, samples: list[FusedSample]) -> None:
        """`samples` from the fuser, waiting for the driver to send them to inference."""
        if rig.finishing and not rig.pushes:
            rig.finished = True
        for sample in samples:
            rig.pending.append(sample)
            if self.observer is not None:
                self.observer.on_sample(sample)
        if self.config.mode is Mode.LIVE:
            while len(rig.pending) > self.config.flow.max_pending_samples:
                gone = rig.pending.popleft()
                self.sink.skip(gone.rig, gone.seq)
                self.stats.dropped["inference_behind"] += 1
        self.stats.max_pending = max(self.stats.max_pending, len(rig.pending))

    def _schedule_inference(self) -> None:
        cap = self.config.flow.max_in_flight_batches
        size = self.config.inference.max_batch_size
        for rig in self.rigs:
            while rig.pending:
                handle = min(self.pool, key=lambda h: h.in_flight)
                if handle.in_flight >= cap:
                    return
                if self.config.mode is Mode.REPLAY:
                    # Fixed batches of consecutive sequence numbers: the same batches every run.
                    if len(rig.pending) < size and not rig.finished:
                        break
                    batch = tuple(rig.pending.popleft() for _ in range(min(size, len(rig.pending))))
                    ref = handle.actor.infer_batch.remote(list(batch))
                else:
                    batch = (rig.pending.popleft(),)
                    batch[0].stage_times["dispatched"] = time.time()
                    ref = handle.actor.infer.remote(batch[0])
                self._inflight[ref] = InferCall(slot=self.pool.index(handle), batch=batch)
                handle.in_flight += 1

    def _on_predictions(self, slot: int, result: Prediction | list[Prediction]) -> None:
        self.pool[slot].in_flight -= 1
        preds: list[Prediction] = result if isinstance(result, list) else [result]
        for p in preds:
            if self.observer is not None:
                self.observer.on_prediction(p)
            before = self.sink.written
            self.sink.write(p)
            if self.sink.written > before:
                self.stats.predictions += 1
                self.stats.latencies.append(p.latency_s)

    # ---- faults ---------------------------------------------------------------------------
    def _recover(self, call: Call, err: Exception) -> None:
        match call:
            case InferCall(slot=slot, batch=batch):
                self.pool[slot].in_flight -= 1
                log.warning(
                    "inference actor lost (%s); resubmitting %d sample(s)", type(err).__name__, len(batch)
                )
                self.stats.resubmitted += len(batch)
                rig = self._rig(batch[0].rig)
                for sample in reversed(batch):
                    rig.pending.appendleft(sample)
            case ReadCall(sensor=key) | WatchCall(sensor=key):
                self._restart_sensor(self._sensor(key), err)
            case PushCall(rig=rid) | CollectCall(rig=rid):
                raise RuntimeError(f"rig {rid}: fuser actor lost; its alignment state is gone") from err

    def _restart_sensor(self, s: SensorHandle, err: Exception) -> None:
        s.restarts += 1
        self.stats.sensor_restarts += 1
        if s.restarts > self.config.flow.max_restarts:
            raise RuntimeError(f"rig {s.rig} sensor {s.sensor_id}: actor died {s.restarts} times") from err
        live = self.config.mode is Mode.LIVE  # a live device goes on from now: nothing to skip
        log.warning(
            "sensor %s/%s lost; %s",
            s.rig,
            s.sensor_id,
            "streaming again" if live else f"resuming after frame {s.delivered}",
        )
        deadline = time.monotonic() + 120
        while True:
            try:
                ray.get(s.actor.start.remote(resume_from=0 if live else s.delivered), timeout=120)
                break
            except ActorUnavailableError:  # Ray is still restarting it
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        if live:
            self._stream(self._rig(s.rig), s)

    # ---- reporting ------------------------------------------------------------------------
    def _count_sink_drops(self) -> None:
        if self._writer is not None and self._writer.dropped:
            self.stats.dropped["sink_behind"] = self._writer.dropped

    def status_line(self) -> str:
        self._count_sink_drops()
        elapsed = max(time.monotonic() - self.stats.started, 1e-9)
        drops = sum(self.stats.dropped.values()) + sum(self.sink.skipped.values())
        return (
            f"{self.stats.predictions} predictions  {self.stats.predictions / elapsed:.1f}/s  "
            f"latency p50 {self.stats.percentile(0.5) * 1e3:.0f} ms p99 {self.stats.percentile(0.99) * 1e3:.0f} ms  "
            f"drops {drops}"
        )

    def _export_metrics(self) -> None:
        """Queue depths, samples in flight and the driver's drop counts, for Prometheus."""
        self._count_sink_drops()
        self.metrics.flow(
            buffered_frames=sum(count for r in self.rigs for _, count in r.buffered),
            pending_samples=sum(len(r.pending) for r in self.rigs),
            in_flight_samples=sum(len(c.batch) for c in self._inflight.values() if isinstance(c, InferCall))
            + sum(r.linked for r in self.rigs),
            dropped=self.stats.dropped,
            sink_skipped=self.sink.skipped,
            resubmitted=self.stats.resubmitted,
        )

    def _print_status(self) -> None:
        import sys

        print("\r" + self.status_line(), end="", file=sys.stderr, flush=True)

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
        summary = self.summary()
        summary["fusers"] = fusers
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
        elapsed = time.monotonic() - self.stats.started
        return {
            "predictions": self.stats.predictions,
            "elapsed_s": round(elapsed, 3),
            "samples_per_s": round(self.stats.predictions / elapsed, 2) if elapsed > 0 else 0.0,
            "latency_p50_s": self.stats.percentile(0.5),
            "latency_p99_s": self.stats.percentile(0.99),
            "dropped": dict(self.stats.dropped),
            "sink_skipped": dict(self.sink.skipped),
            "resubmitted": self.stats.resubmitted,
            "dispatched_by_fuser": self.stats.fuser_dispatched,
            "sensor_transport": dict(self.stats.transport),
            "inference_transport": dict(self.stats.inference_transport),
            "sensor_restarts": self.stats.sensor_restarts,
            "max_pending_samples": self.stats.max_pending,
            "model_version": self.pool[0].info.get("model_version") if self.pool else None,
            "device": self.pool[0].info.get("device") if self.pool else None,
            "inference_threads": self.pool[0].info.get("torch_threads") if self.pool else None,
        }
