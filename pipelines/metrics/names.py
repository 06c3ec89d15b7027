"""The metric table: every metric's name, kind, help and labels (`SPECS`), and `label()`, which
keeps label values to code literals and config ids. No Ray: docs, dashboards and the alert rules
are checked against this table."""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum

# 1 ms to 10 s in 1-2-5 steps: the p99 objective and every stage between fall on a bucket edge.
LATENCY_BUCKETS_S = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0)
BATCH_SIZE_BUCKETS = (1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0)
# Each count from 0 to 16 its own bucket (a few objects around a rig; 16 is a crowded scene).
# Ray takes only positive edges, so 0.5 stands for 0: le="0.5" counts predictions without objects.
OBJECT_COUNT_BUCKETS = (0.5, *(float(n) for n in range(1, 17)))
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
OBJECTS_PER_PREDICTION = MetricSpec(
    "fusion_objects_per_prediction",
    H,
    "Objects in each prediction written (those scoring at least inference.min_score).",
    (),
    OBJECT_COUNT_BUCKETS,
)
DETECTIONS = MetricSpec(
    "fusion_detections_total",
    C,
    "Objects in the predictions written, by class (the model's class names).",
    ("class",),
)
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


_LABEL_VALUE = re.compile(r"^[A-Za-z0-9_.:@+-]{1,64}$")  # ids, versions like name@hash


def label(value: object) -> str:
    """A label value: code literals and config ids pass, anything else becomes "other"."""
    text = str(value)
    return text if _LABEL_VALUE.match(text) else "other"
