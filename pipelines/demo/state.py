"""What the page shows: the newest prediction of the watched rig and the sample it was made from.

The prediction's objects go to the page as records (class, score, position, size, yaw,
velocity, as `fusion.sample.object_record`), and, when the rig's sensors are simulated, the
ground truth at the prediction's instant beside them (`pipelines.demo.truth`); both are drawn
on the bird's-eye view, and on the camera picture when the camera is simulated (a webcam has
no calibration here, so its picture gets no boxes).

`DemoState` is the pipeline runner's observer. The runner calls `on_sample` and `on_prediction`
from its loop; both only store references under a lock (O(1)), so the demo never slows the
pipeline. The server thread takes a `snapshot` whenever `version` moved and renders that alone:
whatever arrived in between is superseded, never queued.
"""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from fusion.detection.boxes import Box3D
from fusion.fuser import PreprocessConfig
from fusion.sample import FusedSample, Modality, Prediction, object_record
from fusion.sensors.preprocess_config import (
    CameraPreprocessConfig,
    LidarPreprocessConfig,
    MicrophonePreprocessConfig,
)
from pipelines.demo import render
from pipelines.demo.sources import SensorPlan
from pipelines.demo.truth import SimTruth, camera_view

KEEP_SAMPLES = 64  # fused samples remembered until their prediction comes (more than can be in flight)
RATE_WINDOW_S = 5.0  # samples/s is counted over this many recent seconds


@dataclass
class Snapshot:
    """A consistent copy of the state, rendered outside the lock."""

    version: int
    status: str
    prediction: Prediction | None
    sample: FusedSample | None
    enabled: dict[str, bool]
    samples_per_s: float
    latency_p50_s: float
    age_s: float  # since the newest prediction arrived
    class_names: list[str] = field(default_factory=list)


class DemoState:
    """The newest state of one rig; written by the runner's thread, read by the server's."""

    def __init__(
        self,
        *,
        rig: str,
        plans: list[SensorPlan],
        preprocess: PreprocessConfig,
        metrics_url: str | None = None,
    ) -> None:
        self.rig = rig
        self.plans = {p.sensor_id: p for p in plans}
        self.camera = preprocess.camera or CameraPreprocessConfig()
        self.lidar = preprocess.lidar or LidarPreprocessConfig()
        self.microphone = preprocess.microphone or MicrophonePreprocessConfig()
        self.metrics_url = metrics_url
        self.truth = SimTruth.of(plans)
        self.camera_view = camera_view(plans)
        self.class_names: list[str] = []
        self.status = "starting: Ray, sensor and model actors (this takes a while on a small machine)"
        self.version = 0
        self._lock = threading.Lock()
        self._samples: OrderedDict[int, FusedSample] = OrderedDict()
        self._prediction: Prediction | None = None
        self._sample: FusedSample | None = None
        self._arrivals: deque[float] = deque()  # monotonic arrival time of each recent prediction
        self._latencies: deque[float] = deque(maxlen=50)
        self._enabled = {sid: True for sid in self.plans}

    # ---- called by the runner (its loop thread) ------------------------------------------
    def on_sample(self, sample: FusedSample) -> None:
        if sample.rig != self.rig:
            return
        with self._lock:
            self._samples[sample.seq] = sample
            while len(self._samples) > KEEP_SAMPLES:
                self._samples.popitem(last=False)

    def on_prediction(self, prediction: Prediction) -> None:
        if prediction.rig != self.rig:
            return
        now = time.monotonic()
        with self._lock:
            self._arrivals.append(now)
            while self._arrivals[0] < now - RATE_WINDOW_S:
                self._arrivals.popleft()
            self._latencies.append(prediction.latency_s)
            if self._prediction is not None and prediction.seq <= self._prediction.seq:
                return  # overtaken by a newer one (inference actors finish out of order)
            self._prediction = prediction
            self._sample = self._samples.pop(prediction.seq, None)
            for seq in [s for s in self._samples if s < prediction.seq]:
                del self._samples[seq]  # dropped before inference or superseded: never shown
            self.version += 1

    # ---- called by the demo and the server --------------------------------------------------
    def set_status(self, status: str, *, class_names: list[str] | None = None) -> None:
        with self._lock:
            self.status = status
            if class_names is not None:
                self.class_names = list(class_names)
            self.version += 1

    def set_enabled(self, sensor_id: str, enabled: bool) -> None:
        if sensor_id not in self._enabled:
            raise KeyError(f"no sensor {sensor_id!r} in rig {self.rig} (sensors: {', '.join(self._enabled)})")
        with self._lock:
            self._enabled[sensor_id] = enabled
            self.version += 1

    def snapshot(self) -> Snapshot:
        now = time.monotonic()
        with self._lock:
            recent = [t for t in self._arrivals if t >= now - RATE_WINDOW_S]
            span = min(RATE_WINDOW_S, now - recent[0]) if len(recent) > 1 else 0.0
            latencies = sorted(self._latencies)
            return Snapshot(
                version=self.version,
                status=self.status,
                prediction=self._prediction,
                sample=self._sample,
                enabled=dict(self._enabled),
                samples_per_s=(len(recent) - 1) / span if span > 0 else 0.0,
                latency_p50_s=latencies[len(latencies) // 2] if latencies else math.nan,
                age_s=now - self._arrivals[-1] if self._arrivals else math.nan,
                class_names=list(self.class_names),
            )

    # ---- what the page gets -----------------------------------------------------------------
    def stats(self, snap: Snapshot) -> dict[str, Any]:
        """The small, often-sent part: status, throughput, staleness, sensors."""
        present = set(snap.prediction.modalities) if snap.prediction else set()
        sensors = []
        for sid, plan in self.plans.items():
            if not snap.enabled[sid]:
                state = "off"
            elif snap.prediction is None:
                state = "waiting"
            else:
                state = "present" if plan.modality.value in present else "missing"
            sensors.append(
                {
                    "id": sid,
                    "modality": plan.modality.value,
                    "kind": plan.kind,
                    "description": plan.description,
                    "reason": plan.reason,
                    "enabled": snap.enabled[sid],
                    "state": state,
                }
            )
        return {
            "type": "stats",
            "version": snap.version,
            "status": snap.status,
            "rig": self.rig,
            "samples_per_s": round(snap.samples_per_s, 2),
            "latency_p50_ms": _ms(snap.latency_p50_s),
            "age_s": None if math.isnan(snap.age_s) else round(snap.age_s, 2),
            "sensors": sensors,
            "metrics_url": self.metrics_url,
        }

    def payload(self, snap: Snapshot) -> dict[str, Any]:
        """Everything: stats, the prediction, the truth and the three pictures (OpenCV encoding and
        the simulated world: call off the loop). `truth` is None when no sensor is simulated;
        `drawn` counts the boxes drawn on each picture ({"camera": {"objects": n, "truth": n}, ...})."""
        out = self.stats(snap) | {
            "type": "update",
            "prediction": None,
            "truth": None,
            "images": {},
            "drawn": {},
        }
        p = snap.prediction
        if p is None:
            return out
        names = (
            snap.class_names
            if len(snap.class_names) == len(p.probs)
            else [str(i) for i in range(len(p.probs))]
        )
        confidence = max(p.probs) if p.probs else 0.0
        out["prediction"] = {
            "seq": p.seq,
            "timestamp": p.timestamp,
            "label": p.label,
            "confidence": round(confidence, 4),
            "probs": [{"name": n, "p": round(v, 4)} for n, v in zip(names, p.probs, strict=True)],
            "position": None if p.position is None else [round(v, 2) for v in p.position],
            "modalities": p.modalities,
            "latency_ms": _ms(p.latency_s),
            "model_version": p.model_version,
            "random_weights": p.model_version.endswith("@random-init"),
            "error": p.error,
            "objects": [_record(box) for box in p.objects],
        }
        truth = None if self.truth is None else self.truth.at(p.timestamp, snap.sample)
        out["truth"] = None if truth is None else [_record(box) for box in truth]
        out["images"], out["drawn"] = self._images(snap.sample, p, confidence, truth or [])
        # The spectrogram always spans the newest `span_samples` of the window (zero-padded if short).
        out["spectrogram_window_s"] = self.microphone.span_samples / self.microphone.sample_rate
        return out

    def _images(
        self, sample: FusedSample | None, p: Prediction, confidence: float, truth: list[Box3D]
    ) -> tuple[dict[str, str | None], dict[str, dict[str, int]]]:
        """The pictures as data URLs, and how many objects and truth boxes each shows."""
        segments = sample.segments if sample is not None else {}
        caption = f"{p.label} {100 * confidence:.0f}%" if p.label else (p.error or "")
        camera = segments.get(Modality.CAMERA)
        mic = segments.get(Modality.MICROPHONE)
        bev = render.lidar_bev(segments.get(Modality.LIDAR), range_m=self.lidar.range_m)
        drawn = {
            "lidar": {
                "truth": render.draw_bev_boxes(bev, truth, range_m=self.lidar.range_m, truth=True),
                "objects": render.draw_bev_boxes(bev, p.objects, range_m=self.lidar.range_m, truth=False),
            }
        }
        images: dict[str, str | None] = {"camera": None, "lidar": render.data_url(bev, "png")}
        images["spectrogram"] = None if mic is None else render.data_url(render.spectrogram_image(mic), "png")
        if camera is not None:
            picture = render.enlarge(render.camera_image(camera, self.camera))
            drawn["camera"] = self._camera_boxes(picture, p.objects, truth)
            images["camera"] = render.data_url(render.caption(picture, caption))
        return images, drawn

    def _camera_boxes(self, picture: np.ndarray, objects: list[Box3D], truth: list[Box3D]) -> dict[str, int]:
        """Draw the boxes on the camera picture (in place) when the camera is simulated."""
        if self.camera_view is None:
            return {"truth": 0, "objects": 0}
        return {
            "truth": render.draw_camera_boxes(picture, truth, view=self.camera_view, truth=True),
            "objects": render.draw_camera_boxes(picture, objects, view=self.camera_view, truth=False),
        }


def _record(box: Box3D) -> dict[str, Any]:
    """A box for the page: `object_record`, rounded to centimetres and milliradians, with its track."""
    record = object_record(box)
    return {
        "class": record["class"],
        "score": None if box.score is None else round(box.score, 4),
        "position": [round(v, 2) for v in record["position"]],
        "size": [round(v, 2) for v in record["size"]],
        "yaw": round(record["yaw"], 3),
        "velocity": [round(v, 2) for v in record["velocity"]],
        "track_id": box.track_id,
    }


def _ms(seconds: float) -> float | None:
    return None if math.isnan(seconds) else round(seconds * 1e3, 1)
