"""Recording metrics through Ray (`inc`, `observe`, `set_gauge`, `CounterExport`) and the small
recorders each actor and the driver keep: an actor builds one in `__init__` (which also counts
the restart when Ray reconstructed the actor) and hands it the plain `fusion/` object's stats
after each call; the recorder exports what grew since the previous call."""

from __future__ import annotations

import threading
import time
import warnings
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import ray
from ray.util import metrics as ray_metrics

from fusion.errors import InputError
from fusion.fuser import Fuser
from fusion.sample import FusedSample, Modality, Prediction
from fusion.sensors import SourceStats
from pipelines.metrics.names import (
    ACTOR_RESTARTS,
    BATCH_DURATION,
    BATCH_SIZE,
    FRAMES_DROPPED,
    FRAMES_INGESTED,
    IN_FLIGHT,
    INPUT_ERRORS,
    MODEL_INFO,
    PREDICTIONS_DUPLICATE,
    QUEUE_DEPTH,
    SAMPLES_DROPPED,
    SAMPLES_FUSED,
    SAMPLES_INCOMPLETE,
    SAMPLES_RESUBMITTED,
    SOURCE_RECONNECTS,
    Kind,
    MetricSpec,
    label,
)

if TYPE_CHECKING:  # only inference workers load torch
    from fusion.inference import InferenceEngine

_instances: dict[str, Any] = {}  # per process: Ray metric objects are built on first use


def _metric(spec: MetricSpec) -> Any:
    found = _instances.get(spec.name)
    if found is None:
        if spec.kind is Kind.COUNTER:
            found = ray_metrics.Counter(spec.name, description=spec.help, tag_keys=spec.labels)
        elif spec.kind is Kind.GAUGE:
            found = ray_metrics.Gauge(spec.name, description=spec.help, tag_keys=spec.labels)
        else:
            found = ray_metrics.Histogram(
                spec.name, description=spec.help, boundaries=list(spec.buckets), tag_keys=spec.labels
            )
        _instances[spec.name] = found
    return found


def _tags(spec: MetricSpec, labels: Mapping[str, object]) -> dict[str, str] | None:
    if set(labels) != set(spec.labels):
        raise InputError(f"{spec.name} takes labels {spec.labels}, got {tuple(labels)}")
    return {k: label(v) for k, v in labels.items()} or None


def inc(spec: MetricSpec, value: float = 1.0, **labels: object) -> None:
    """Add `value` to a counter; nothing for 0 (Ray refuses non-positive increments)."""
    if value > 0:
        _metric(spec).inc(value, tags=_tags(spec, labels))


def observe(spec: MetricSpec, value: float, **labels: object) -> None:
    """Record into a histogram; a negative latency (clock skew across hosts) counts as 0."""
    _metric(spec).observe(max(value, 0.0), tags=_tags(spec, labels))


def set_gauge(spec: MetricSpec, value: float, **labels: object) -> None:
    _metric(spec).set(value, tags=_tags(spec, labels))


class CounterExport:
    """Exports counts kept by a plain `fusion/` object as a Prometheus counter.

    `update({label values: count})` adds what each count grew since the previous call; the
    label-value tuples follow `spec.labels`.
    """

    def __init__(self, spec: MetricSpec) -> None:
        assert spec.kind is Kind.COUNTER, spec.name
        self.spec = spec
        self._last: dict[tuple[str, ...], float] = {}

    def update(self, counts: Mapping[tuple[str, ...], float]) -> None:
        for key, n in counts.items():
            grown = n - self._last.get(key, 0)
            if grown > 0:
                inc(self.spec, grown, **dict(zip(self.spec.labels, key, strict=True)))
            self._last[key] = n


def count_restart(actor: str) -> None:
    """In an actor's `__init__`: count it when Ray reconstructed this actor after it died."""
    if not ray.is_initialized():
        return
    with warnings.catch_warnings():
        # Ray 2.60's implementation of the property reads a deprecated one of its own.
        warnings.simplefilter("ignore", DeprecationWarning)
        restarted = ray.get_runtime_context().was_current_actor_reconstructed
    if restarted:
        inc(ACTOR_RESTARTS, actor=actor)


def _keep_setting(spec: MetricSpec, value: float, labels: Mapping[str, object], every_s: float = 1.0) -> None:
    while True:
        set_gauge(spec, value, **labels)
        time.sleep(every_s)


# ---- recorders for the actors -----------------------------------------------------------
class SourceMetrics:
    """A SensorActor's metrics: frames delivered, and its source's errors, drops and reconnects."""

    def __init__(self, *, rig: str, modality: Modality) -> None:
        count_restart("sensor")
        self.rig, self.modality = rig, modality
        self._errors = CounterExport(INPUT_ERRORS)
        self._dropped = CounterExport(FRAMES_DROPPED)
        self._reconnects = CounterExport(SOURCE_RECONNECTS)

    def record(self, delivered: int, stats: SourceStats) -> None:
        """After a read: `delivered` frames returned, `stats` the source's running totals."""
        rig, m = self.rig, self.modality
        inc(FRAMES_INGESTED, delivered, rig=rig, modality=m)
        self._errors.update({(rig, m, kind): n for kind, n in stats.errors.items()})
        self._dropped.update({(rig, m, reason): n for reason, n in stats.dropped.items()})
        self._reconnects.update({(rig, m): stats.reconnects})


class FuserMetrics:
    """A FuserActor's metrics: samples fused and incomplete, preprocessing errors, alignment drops."""

    def __init__(self, *, rig: str) -> None:
        count_restart("fuser")
        self.rig = rig
        self._fused = CounterExport(SAMPLES_FUSED)
        self._incomplete = CounterExport(SAMPLES_INCOMPLETE)
        self._errors = CounterExport(INPUT_ERRORS)
        self._dropped = CounterExport(FRAMES_DROPPED)

    def record(self, fuser: Fuser) -> None:
        rig = self.rig
        self._fused.update({(rig,): fuser.samples})
        self._incomplete.update({(rig, m.value): n for m, n in fuser.incomplete.items()})
        self._errors.update({(rig, m.value, kind): n for (m, kind), n in fuser.input_errors.items()})
        dropped = fuser.sync.stats.dropped
        self._dropped.update({(rig, m.value, reason.value): n for (m, reason), n in dropped.items()})


class InferenceMetrics:
    """An InferenceActor's metrics: the model it runs (info gauge), batch sizes and model time."""

    def __init__(self, engine: InferenceEngine) -> None:
        count_restart("inference")
        self.engine = engine
        info = {
            "model": engine.model.config.name,
            "version": engine.model_version,
            "parameters": sum(p.numel() for p in engine.model.parameters()),
            "device": engine.device,
        }
        # Ray's metrics agent forgets a gauge that is not set again within a few report
        # intervals, so the info is re-set for as long as the actor lives.
        threading.Thread(target=_keep_setting, args=(MODEL_INFO, 1.0, info), daemon=True).start()

    def timed_predict(self, samples: Sequence[FusedSample]) -> list[Prediction]:
        """`engine.predict(samples)`, recording the batch's size and how long the model took."""
        start = time.perf_counter()
        out = self.engine.predict(samples)
        observe(BATCH_DURATION, time.perf_counter() - start)
        observe(BATCH_SIZE, len(samples))
        return out


_STAGES = (("capture_to_fused", "fused"), ("fused_to_inferred", "inferred"))


_SINK_REASONS = {"gap": "sink_gap", "error": "inference_error"}  # OrderedSink.skipped keys
# RunStats.dropped also counts frames the driver discards; those go through `frames_dropped`,
# which knows their sensor.
_FRAME_REASONS = frozenset({"sensor_off"})


class DriverMetrics:
    """The driver's view of the flow: queue depths, work in flight, samples dropped and resubmitted."""

    def __init__(self) -> None:
        self._dropped = CounterExport(SAMPLES_DROPPED)
        self._duplicates = CounterExport(PREDICTIONS_DUPLICATE)
        self._resubmitted = CounterExport(SAMPLES_RESUBMITTED)
        self._frames_off = CounterExport(FRAMES_DROPPED)

    def flow(
        self,
        *,
        buffered_frames: int,
        pending_samples: int,
        in_flight_samples: int,
        dropped: Mapping[str, int],
        sink_skipped: Mapping[str, int],
        resubmitted: int,
        frames_off: Mapping[tuple[str, Modality], int],
    ) -> None:
        """Current queue depths and running totals (runner stats, OrderedSink.skipped);
        `frames_off`: (rig, modality) -> frames the driver discarded (replay, a sensor off)."""
        set_gauge(QUEUE_DEPTH, buffered_frames, edge="sensor_to_fuser")
        set_gauge(QUEUE_DEPTH, pending_samples, edge="fuser_to_inference")
        set_gauge(IN_FLIGHT, in_flight_samples)
        drops: dict[tuple[str, ...], int] = {
            (reason,): n for reason, n in dropped.items() if reason not in _FRAME_REASONS
        }
        drops |= {(_SINK_REASONS[r],): n for r, n in sink_skipped.items() if r in _SINK_REASONS}
        self._dropped.update(drops)
        self._duplicates.update({(): sink_skipped.get("duplicate", 0)})
        self._resubmitted.update({(): resubmitted})
        self._frames_off.update({(rig, m.value, "sensor_off"): n for (rig, m), n in frames_off.items()})
