"""Every Prometheus metric of the pipeline, and the small recorders actors and the driver use.

Route: `ray.util.metrics` in any process (actor or driver) -> the Ray metrics agent of that
process's node (`ray start --metrics-export-port`, or `metrics.port` for the local Ray) ->
Prometheus, which finds every node's agent through Ray's service discovery file. Ray exports
application metrics as `ray_<name>`; deploy/prometheus/prometheus.yml strips that prefix, so the
names in `SPECS` are exactly the names users query (see docs/monitoring.md).

Labels are small fixed sets: modality, stage, reason, kind, edge, actor kind, and `rig`, whose
values are the rig ids of the config (a rig fuses one sensor per modality, so rig and modality
name a sensor without a sensor-id label). No value comes from a payload or a file name, and
`label()` maps anything that does not look like a code literal or a config id to "other", so a
misbehaving source backend cannot grow the number of series.

Recorders keep the actors thin: an actor builds one in `__init__` (which also counts the
restart when Ray reconstructed the actor) and hands it the plain `fusion/` object's stats after
each call; the recorder exports what grew since the previous call.
"""

from __future__ import annotations

import os
import re
import socket
import threading
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Any

import ray
from ray.util import metrics as ray_metrics

from fusion.errors import ConfigError, InputError
from fusion.fuser import Fuser
from fusion.sample import FusedSample, Prediction
from fusion.sensors import SourceStats
from fusion.sinks.base import Sink
from pipelines.config import MetricsConfig

if TYPE_CHECKING:  # only inference workers load torch
    from fusion.inference import InferenceEngine

# 1 ms to 10 s in 1-2-5 steps: the p99 objective and every stage between fall on a bucket edge.
LATENCY_BUCKETS_S = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0)
BATCH_SIZE_BUCKETS = (1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0)
RAY_PREFIX = "ray_"  # what Ray's exporter puts before every application metric name


class Kind(StrEnum):
    COUNTER = "counter"
    GAUGE = "gauge"
    HISTOGRAM = "histogram"


@dataclass(frozen=True)
class MetricSpec:
    """One metric as Prometheus shows it (after the scrape config strips Ray's prefix)."""

    name: str
    kind: Kind
    help: str
    labels: tuple[str, ...] = ()
    buckets: tuple[float, ...] = ()

    def series_names(self) -> set[str]:
        """The names a query can use: a histogram's `_bucket`, `_sum` and `_count` series."""
        if self.kind is Kind.HISTOGRAM:
            return {f"{self.name}_bucket", f"{self.name}_sum", f"{self.name}_count"}
        return {self.name}


C, G, H = Kind.COUNTER, Kind.GAUGE, Kind.HISTOGRAM
FRAMES_INGESTED = MetricSpec(
    "fusion_frames_ingested_total", C, "Frames delivered by sensor actors.", ("rig", "modality")
)
FRAMES_DROPPED = MetricSpec(
    "fusion_frames_dropped_total",
    C,
    "Good frames not used: dropped by the source (queue_full, superseded, too_old, input_overflow) "
    "or by time alignment (late, duplicate, evicted_unused, ...).",
    ("rig", "modality", "reason"),
)
INPUT_ERRORS = MetricSpec(
    "fusion_input_errors_total",
    C,
    "Bad input skipped: corrupt frames, files or packets, and frames preprocessing rejected.",
    ("rig", "modality", "kind"),
)
SOURCE_RECONNECTS = MetricSpec(
    "fusion_source_reconnects_total",
    C,
    "Live sources reopened after losing their device.",
    ("rig", "modality"),
)
SAMPLES_FUSED = MetricSpec("fusion_samples_fused_total", C, "Fused samples made by fusers.", ("rig",))
SAMPLES_INCOMPLETE = MetricSpec(
    "fusion_samples_incomplete_total",
    C,
    "Fused samples without a modality, by the one missing.",
    ("rig", "missing"),
)
SAMPLES_DROPPED = MetricSpec(
    "fusion_samples_dropped_total",
    C,
    "Fused samples that gave no prediction: inference_behind (live mode, oldest dropped), "
    "inference_error (the model rejected it), sink_gap (given up waiting for it), "
    "sink_behind (live mode, the output sink too slow: oldest waiting prediction dropped).",
    ("reason",),
)
SAMPLES_RESUBMITTED = MetricSpec(
    "fusion_samples_resubmitted_total", C, "Samples resubmitted after their inference actor died."
)
PREDICTIONS = MetricSpec("fusion_predictions_total", C, "Predictions written to the output.")
PREDICTIONS_DUPLICATE = MetricSpec(
    "fusion_predictions_duplicate_total",
    C,
    "Second predictions of one sample (resubmitted after a fault) discarded by the sink.",
)
ACTOR_RESTARTS = MetricSpec(
    "fusion_actor_restarts_total",
    C,
    "Actors reconstructed by Ray after dying; counted by the new actor, so each restart is a new series.",
    ("actor",),
)
STAGE_LATENCY = MetricSpec(
    "fusion_stage_latency_seconds",
    H,
    "Time a written prediction's sample spent in each stage: capture_to_fused (from the capture of "
    "its newest reading), fused_to_inferred, inferred_to_written.",
    ("stage",),
    LATENCY_BUCKETS_S,
)
END_TO_END_LATENCY = MetricSpec(
    "fusion_end_to_end_latency_seconds",
    H,
    "Capture of a sample's newest reading to its prediction being written.",
    (),
    LATENCY_BUCKETS_S,
)
BATCH_SIZE = MetricSpec("fusion_inference_batch_size", H, "Samples per model call.", (), BATCH_SIZE_BUCKETS)
BATCH_DURATION = MetricSpec(
    "fusion_inference_batch_duration_seconds", H, "Wall time of one model call.", (), LATENCY_BUCKETS_S
)
QUEUE_DEPTH = MetricSpec(
    "fusion_queue_depth",
    G,
    "Work waiting at an edge of the graph: sensor_to_fuser (frames), fuser_to_inference (samples).",
    ("edge",),
)
IN_FLIGHT = MetricSpec(
    "fusion_in_flight_samples", G, "Samples submitted to inference actors, not yet answered."
)
MODEL_INFO = MetricSpec(
    "fusion_model_info",
    G,
    "1 per inference actor, labelled with the model it runs.",
    ("model", "version", "parameters", "device"),
)

# Every metric above, in the order defined: a new one cannot be left out of the export checks.
SPECS: tuple[MetricSpec, ...] = tuple(v for v in list(globals().values()) if isinstance(v, MetricSpec))
SPEC_BY_NAME = {s.name: s for s in SPECS}


def exported_series() -> set[str]:
    """Every series name Prometheus can hold for this project's metrics."""
    return {n for s in SPECS for n in s.series_names()}


# ---- recording --------------------------------------------------------------------------
_LABEL_VALUE = re.compile(r"^[A-Za-z0-9_.:@+-]{1,64}$")  # ids, versions like name@hash
_instances: dict[str, Any] = {}  # per process: Ray metric objects are built on first use


def label(value: object) -> str:
    """A label value: code literals and config ids pass, anything else becomes "other"."""
    text = str(value)
    return text if _LABEL_VALUE.match(text) else "other"


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

    def __init__(self, *, rig: str, modality: str) -> None:
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


# ---- the driver --------------------------------------------------------------------------
_STAGES = (("capture_to_fused", "fused"), ("fused_to_inferred", "inferred"))


class InstrumentedSink(Sink):
    """Wraps the output sink: each prediction written is counted and its latencies observed.

    Sits behind the OrderedSink, so every prediction is seen once, when it is really written.
    """

    def __init__(self, sink: Sink, *, clock: Callable[[], float] = time.time) -> None:
        self.sink = sink
        self.clock = clock

    def write(self, prediction: Prediction) -> None:
        self.sink.write(prediction)
        now = self.clock()
        times = prediction.stage_times
        captured = max((t for k, t in times.items() if k.startswith("capture.")), default=None)
        if captured is not None:
            observe(END_TO_END_LATENCY, now - captured)
        previous = captured
        for stage, key in _STAGES:
            if key in times and previous is not None:
                observe(STAGE_LATENCY, times[key] - previous, stage=stage)
            previous = times.get(key)
        if previous is not None:
            observe(STAGE_LATENCY, now - previous, stage="inferred_to_written")
        inc(PREDICTIONS)

    def close(self) -> None:
        self.sink.close()


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

    def flow(
        self,
        *,
        buffered_frames: int,
        pending_samples: int,
        in_flight_samples: int,
        dropped: Mapping[str, int],
        sink_skipped: Mapping[str, int],
        resubmitted: int,
    ) -> None:
        """Current queue depths and running totals (runner stats, OrderedSink.skipped)."""
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

    def frames_dropped(self, *, rig: str, modality: str, reason: str, count: int) -> None:
        """Frames the driver discarded (a sensor switched off)."""
        inc(FRAMES_DROPPED, count, rig=rig, modality=modality, reason=reason)


# ---- the local Ray's export endpoint -------------------------------------------------------
def check_port_free(port: int, *, key: str = "metrics.port") -> None:
    """Fail naming the port when it is taken: Ray would otherwise time out starting its node.

    Ray's metrics agent binds every interface of the node, so that is what is tried here.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind(("", port))
        except OSError as err:
            raise ConfigError(
                f"{key}: port {port} is already in use ({err.strerror}); choose another, "
                "or null to let Ray pick a free one (Prometheus finds it through Ray's service discovery file)"
            ) from None


# Objects up to this size travel inside Ray's task messages rather than through the shared-memory
# object store: a camera frame or LiDAR sweep (~230 KB) then reaches its fuser in one message,
# without the store's create/seal/fetch round trips, which cost a live tick 6 ms p50 on 2 cores
# (docs/benchmarks.md). Ray's default is 100 KiB. A cluster's nodes set it with the environment
# variable RAY_max_direct_call_object_size (the images do).
INLINE_OBJECT_BYTES = 2 << 20


def ray_init_options(config: MetricsConfig, address: str | None) -> dict[str, Any]:
    """`ray.init` arguments: for a new local Ray, those that let Prometheus scrape it.

    Joining a cluster (an address, or RAY_ADDRESS) takes nothing: its nodes were started with
    their own `--metrics-export-port`. A local Ray gets the configured export port (checked
    free first) and its dashboard, whose head writes the service discovery file
    (`<session dir>/prom_metrics_service_discovery.json`, linked from /tmp/ray/).
    """
    if address is not None or os.environ.get("RAY_ADDRESS"):
        return {"include_dashboard": False}
    if config.port is not None:
        check_port_free(config.port)
    return {
        "include_dashboard": True,
        "dashboard_host": config.dashboard_host,
        "_metrics_export_port": config.port,
        "_system_config": {
            "metrics_report_interval_ms": int(config.report_interval_s * 1000),
            "max_direct_call_object_size": INLINE_OBJECT_BYTES,
        },
    }
