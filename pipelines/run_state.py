"""What the runner knows of its actors and of the run: handles to them, and the run's counts."""

from __future__ import annotations

import math
import time
from collections import Counter, deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from fusion.flow.dispatch import PendingQueue
from fusion.flow.recovery import SensorProgress
from fusion.flow.replay import PushWindow


@dataclass(kw_only=True)
class SensorHandle(SensorProgress):
    modality: str
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
    inference_restarts: int = 0  # new processes seen behind inference actors (faults.RestartCounter)
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

    def summary(self, *, sink_skipped: Mapping[str, int], info: Mapping[str, Any]) -> dict[str, Any]:
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
            "model_version": info.get("model_version"),
            "device": info.get("device"),
            "inference_threads": info.get("torch_threads"),
        } | ({"ended": self.ended} if self.ended else {})


MOSTLY_MISSING = 0.5  # as the FusionModalityMissing alert (fusion:objective_max_missing_ratio)


def starved_modalities(fusers: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """One line per rig and modality missing from most of its fused samples, with why: a rig
    fusing without a sensor must not pass unnoticed (e.g. too many rigs for a node's cores)."""
    lines = []
    for rig, stats in sorted(fusers.items()):
        samples = stats.get("samples", 0)
        for modality, missing in sorted(stats.get("incomplete", {}).items()):
            if samples and missing / samples > MOSTLY_MISSING:
                why = {k: n for k, n in stats.get("sync_dropped", {}).items() if k.startswith(f"{modality}:")}
                why |= {
                    k: n for k, n in stats.get("input_errors", {}).items() if k.startswith(f"{modality}:")
                }
                shown = ", ".join(f"{k} {n}" for k, n in sorted(why.items())) or "no frames"
                lines.append(f"rig {rig}: {modality} missing from {missing} of {samples} samples ({shown})")
    return lines
