"""The run's books: handles to its actors, the work in flight, the run's counts (`RunState`).

The runner builds the actors and fills these in; the drivers and recovery decide over them and
reach the actors only through an `ActorPort` (`pipelines.port`). Nothing here imports Ray.
"""

from __future__ import annotations

import math
import threading
import time
from collections import Counter, deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from fusion.flow.dispatch import InferencePool, PendingQueue
from fusion.flow.messages import Call, InferCall, InferenceInfo, SensorKey
from fusion.flow.recovery import SensorProgress
from fusion.flow.replay import PushWindow
from fusion.fuser import FuserStats
from fusion.sample import FusedSample, Modality, Prediction
from fusion.sinks.base import OrderedSink
from pipelines.config import PipelineConfig, expand_rigs

C = TypeVar("C")


@dataclass(kw_only=True)
class SensorHandle(SensorProgress):
    modality: Modality
    actor: Any
    watched: float = 0.0  # live: monotonic time the last `stream_state` was sent


@dataclass(kw_only=True)
class RigHandle:
    id: str
    fuser: Any
    sensors: list[SensorHandle]
    pending: PendingQueue  # fused, not yet submitted
    window: PushWindow  # replay: frames read for the fuser, and the pushes carrying them
    link: tuple[str, str] | None = None  # live: the fuser's local link (node id, socket path)
    linked: int = 0  # live: samples the fuser sent over an inference actor's link, not yet answered


@dataclass
class InferenceHandle:
    actor: Any
    info: InferenceInfo
    link: tuple[str, str] | None = None  # live: its local link (node id, socket path)


@dataclass
class RunStats:
    started: float = field(default_factory=time.monotonic)
    predictions: int = 0
    dropped: Counter[str] = field(default_factory=Counter)
    # replay: frames the driver discarded because their sensor was off, by (rig, modality)
    sensor_off: Counter[tuple[str, Modality]] = field(default_factory=Counter)
    resubmitted: int = 0
    fuser_dispatched: int = 0  # live: samples the fusers sent straight to inference
    sensor_restarts: int = 0
    inference_restarts: int = 0  # new processes seen behind inference actors (recovery.RestartCounter)
    ended: str | None = None  # why the run ended early (a node lost), for the summary
    max_pending: int = 0  # the most fused samples ever waiting in one rig: bounded by the config
    transport: dict[str, str] = field(default_factory=dict)  # live: "rig/sensor" -> socket | ray
    inference_transport: dict[str, list[str]] = field(default_factory=dict)  # live: rig -> per actor
    latencies: deque[float] = field(default_factory=lambda: deque(maxlen=2048))

    def percentile(self, q: float) -> float:
        data = sorted(self.latencies)
        return data[min(len(data) - 1, int(q * len(data)))] if data else math.nan

    def status_line(self, *, sink_skipped: Mapping[str, int]) -> str:
        """The one line `fusion run` keeps rewriting on stderr."""
        elapsed = max(time.monotonic() - self.started, 1e-9)
        drops = sum(self.dropped.values()) + sum(sink_skipped.values())
        return (
            f"{self.predictions} predictions  {self.predictions / elapsed:.1f}/s  "
            f"latency p50 {self.percentile(0.5) * 1e3:.0f} ms p99 {self.percentile(0.99) * 1e3:.0f} ms  "
            f"drops {drops}"
        )

    def summary(self, *, sink_skipped: Mapping[str, int], info: InferenceInfo | None) -> dict[str, Any]:
        """What `run()` returns (and `fusion run` prints); `info` is an inference actor's `info()`."""
        elapsed = time.monotonic() - self.started
        return {
            "predictions": self.predictions,
            "elapsed_s": round(elapsed, 3),
            "samples_per_s": round(self.predictions / elapsed, 2) if elapsed > 0 else 0.0,
            "latency_p50_s": self.percentile(0.5),
            "latency_p99_s": self.percentile(0.99),
            "dropped": dict(self.dropped),
            "sink_skipped": dict(sink_skipped),
            "resubmitted": self.resubmitted,
            "dispatched_by_fuser": self.fuser_dispatched,
            "sensor_transport": dict(self.transport),
            "inference_transport": dict(self.inference_transport),
            "sensor_restarts": self.sensor_restarts,
            "inference_restarts": self.inference_restarts,
            "max_pending_samples": self.max_pending,
            "model_version": info.model_version if info else None,
            "device": info.device if info else None,
            "inference_threads": info.torch_threads if info else None,
        } | ({"ended": self.ended} if self.ended else {})


class RunObserver(Protocol):
    """Sees the run from the driver's loop (the demo page): both calls must return at once."""

    def on_sample(self, sample: FusedSample) -> None:
        """Every FusedSample as it leaves its fuser, before inference (and before any live drop)."""

    def on_prediction(self, prediction: Prediction) -> None:
        """Every Prediction as it comes back, in completion order (not sequence order)."""


class RunState:
    """One run's books: the rigs and the inference pool (handles to their actors), the calls
    in flight (a reference -> the `Call` it answers), each actor's load, what is switched off,
    the ordered sink and the counts. Plain data and bookkeeping: no method calls an actor.

    Args:
        config: the validated pipeline config.
        sink: where predictions go, in sequence order, exactly once per rig.
        observer: sees every sample and prediction (the demo), or None.
        lossless: replay (nothing dropped); live drops the oldest sample when behind.
    """

    def __init__(
        self,
        *,
        config: PipelineConfig,
        sink: OrderedSink,
        observer: RunObserver | None = None,
        lossless: bool,
    ) -> None:
        self.config = config
        self.sink = sink
        self.observer = observer
        self.lossless = lossless
        self.rigs: list[RigHandle] = []
        self.pool: list[InferenceHandle] = []
        self.inflight: dict[Any, Call] = {}  # reference -> the call it answers
        # Calls in flight at each inference actor, and which of them has room (`fusion.flow`).
        self.inference = InferencePool(
            slots=config.inference.actors, max_in_flight=config.flow.max_in_flight_batches
        )
        self.stats = RunStats()
        # (rig id, sensor id) switched off: replaced, never mutated, so the loop reads it while
        # other threads switch sensors.
        self.disabled: frozenset[SensorKey] = frozenset()
        self._stop = threading.Event()

    @property
    def stopping(self) -> bool:
        """`stop()` was asked for (from any thread)."""
        return self._stop.is_set()

    def stop(self) -> None:
        self._stop.set()

    def rig(self, rid: str) -> RigHandle:
        return next(r for r in self.rigs if r.id == rid)

    def sensor(self, key: SensorKey) -> SensorHandle:
        return next(s for r in self.rigs for s in r.sensors if s.key == key)

    def rig_resources(self, rid: str) -> dict[str, float]:
        """The custom resources rig `rid`'s actors ask for (`rigs[].resources`)."""
        return next(dict(rig.resources) for r, rig, _ in expand_rigs(self.config) if r == rid)

    def calls(self, kind: type[C]) -> list[C]:
        """The calls of one kind in flight (e.g. every `CollectCall`)."""
        return [c for c in self.inflight.values() if isinstance(c, kind)]

    def on_fused(self, rig: RigHandle, samples: list[FusedSample]) -> None:
        """`samples` from the fuser wait to be sent to inference; live, the oldest beyond the
        bound are dropped (the sink is told not to wait for them)."""
        if self.observer is not None:
            for sample in samples:
                self.observer.on_sample(sample)
        for gone in rig.pending.extend(samples):
            self.sink.skip(gone.rig, gone.seq)
            self.stats.dropped["inference_behind"] += 1
        self.stats.max_pending = max(self.stats.max_pending, rig.pending.max_depth)

    def on_predictions(self, slot: int, result: Prediction | list[Prediction]) -> None:
        """pool[slot] answered: its load goes down, the predictions go to the sink."""
        self.inference.answered(slot)
        for p in result if isinstance(result, list) else [result]:
            if self.observer is not None:
                self.observer.on_prediction(p)
            before = self.sink.written
            self.sink.write(p)
            if self.sink.written > before:
                self.stats.predictions += 1
                self.stats.latencies.append(p.latency_s)

    def in_flight_samples(self) -> int:
        """Samples at inference now: in calls the driver awaits, and over fusers' links."""
        return sum(len(c.batch) for c in self.calls(InferCall)) + sum(r.linked for r in self.rigs)


MOSTLY_MISSING = 0.5  # as the FusionModalityMissing alert (fusion:objective_max_missing_ratio)


def starved_modalities(fusers: Mapping[str, FuserStats]) -> list[str]:
    """One line per rig and modality missing from most of its fused samples, with why: a rig
    fusing without a sensor must not pass unnoticed (e.g. too many rigs for a node's cores)."""
    lines = []
    for rig, stats in sorted(fusers.items()):
        for modality, missing in sorted(stats.incomplete.items()):
            if stats.samples and missing / stats.samples > MOSTLY_MISSING:
                why = {f"{m.value}:{r.value}": n for (m, r), n in stats.sync_dropped.items() if m is modality}
                why |= {f"{m.value}:{r}": n for (m, r), n in stats.input_errors.items() if m is modality}
                shown = ", ".join(f"{k} {n}" for k, n in sorted(why.items())) or "no frames"
                lines.append(
                    f"rig {rig}: {modality.value} missing from {missing} of {stats.samples} samples ({shown})"
                )
    return lines
