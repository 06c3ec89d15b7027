"""Data that flows between sensors and the model: Frame -> Segment -> FusedSample -> Prediction.

A `Frame` is one reading of one sensor with its capture timestamp. A `Segment` is one modality's preprocessed reading: `values` [M, c] and either explicit
`positions` [M, d] in [-1, 1] (LiDAR: they change every sweep) or a `grid` shape whose
positions are implicit and identical every time (image H x W, spectrogram T x F).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any

import numpy as np

from fusion.detection.boxes import Box3D
from fusion.errors import InputError


class Modality(StrEnum):
    """The sensor kinds the pipeline fuses. Iteration order everywhere is `MODALITY_ORDER`."""

    CAMERA = "camera"
    LIDAR = "lidar"
    MICROPHONE = "microphone"


# Fixed order in which modalities are concatenated into the byte array (sorted by name,
# as DeepMind's multimodal preprocessor does), so a model never depends on dict order.
MODALITY_ORDER: tuple[Modality, ...] = tuple(sorted(Modality, key=lambda m: m.value))


def parse_modality(name: str | Modality) -> Modality:
    """Return the `Modality` for `name`, or raise a ValueError listing the known ones."""
    if isinstance(name, Modality):
        return name
    try:
        return Modality(name)
    except ValueError:
        known = ", ".join(m.value for m in MODALITY_ORDER)
        raise InputError(f"unknown modality {name!r} (known: {known})") from None


@dataclass(frozen=True)
class Segment:
    """One modality of one fused sample, ready for the model.

    Attributes:
        values: [M, c] float32 values per row (pixel, spectrogram cell, point).
        positions: [M, d] float32 in [-1, 1], or None when `grid` is given.
        grid: the implicit grid shape (d ints whose product is M), or None for explicit positions.
    """

    values: np.ndarray
    positions: np.ndarray | None = None
    grid: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        if (self.positions is None) == (self.grid is None):
            raise InputError("a Segment needs exactly one of `positions` or `grid`")
        if self.values.ndim != 2:
            raise InputError(f"Segment values must be [M, c], got shape {self.values.shape}")
        rows = self.values.shape[0]
        if self.grid is not None and math.prod(self.grid) != rows:
            raise InputError(f"grid {self.grid} has {math.prod(self.grid)} cells but values have {rows} rows")
        if self.positions is not None and (self.positions.ndim != 2 or self.positions.shape[0] != rows):
            raise InputError(
                f"Segment positions must be [{rows}, d] to match values, got {self.positions.shape}"
            )

    @property
    def num_rows(self) -> int:
        return int(self.values.shape[0])


@dataclass(frozen=True)
class Frame:
    """One reading of one sensor.

    Attributes:
        modality: which kind of sensor produced it.
        sensor_id: the configured sensor name (unique within a rig).
        timestamp: capture time in seconds: the capturing host's monotonic clock for live
            devices, media / recording time for files, scene time for the simulator.
        wall_time: capture time as Unix seconds (for humans and cross-host logs).
        data: camera [H, W, 3] uint8 RGB; microphone [n] float32 mono PCM in [-1, 1];
            LiDAR [N, 4] float32 (x, y, z metres in the sensor frame, intensity).
        sample_rate: microphone only: samples per second of `data`; `timestamp` is the
            capture time of the first sample.
        index: the source's running frame number (gaps mean skipped or dropped frames).
    """

    modality: Modality
    sensor_id: str
    timestamp: float
    wall_time: float
    data: np.ndarray
    sample_rate: float | None = None
    index: int = 0

    def __post_init__(self) -> None:
        check_frame_data(self.modality, self.data, self.sample_rate, self.sensor_id)

    @property
    def end_time(self) -> float:
        """Capture time just after the last sample (audio); the timestamp for other modalities."""
        if self.modality is Modality.MICROPHONE and self.sample_rate:
            return self.timestamp + len(self.data) / self.sample_rate
        return self.timestamp


def check_frame_data(modality: Modality, data: np.ndarray, sample_rate: float | None, sensor_id: str) -> None:
    """Raise ValueError naming the sensor when `data` breaks the modality's Frame contract."""
    where = f"{modality.value} frame from {sensor_id!r}"
    if modality is Modality.CAMERA:
        if data.ndim != 3 or data.shape[2] != 3 or data.dtype != np.uint8:
            raise InputError(f"{where}: expected [H, W, 3] uint8 RGB, got {data.shape} {data.dtype}")
    elif modality is Modality.MICROPHONE:
        if data.ndim != 1 or data.dtype != np.float32:
            raise InputError(f"{where}: expected [n] float32 PCM, got {data.shape} {data.dtype}")
        if not sample_rate or sample_rate <= 0:
            raise InputError(f"{where}: a positive sample_rate is required, got {sample_rate}")
    elif modality is Modality.LIDAR and (data.ndim != 2 or data.shape[1] != 4 or data.dtype != np.float32):
        raise InputError(
            f"{where}: expected [N, 4] float32 (x, y, z, intensity), got {data.shape} {data.dtype}"
        )


@dataclass
class FusedSample:
    """One fusion tick: the aligned, preprocessed readings of every sensor of one rig.

    Attributes:
        seq: sequence number within the rig, consecutive from 0.
        timestamp: the fusion tick time (same clock as the frames' `timestamp`).
        segments: modality -> Segment; a modality with no usable reading is absent.
        rig: the rig that produced it.
        capture_times: modality -> capture timestamp of the reading used.
        stage_times: stage name -> wall time (Unix seconds), for latency tracing, in order:
            `capture.<modality>` (each reading complete), `aligned` (the fuser has the tick's
            frames), `fused` (preprocessed), `dispatched` (sent to inference, live mode:
            by the fuser when the driver granted it a free slot, else by the driver), and on the Prediction `forward_start` and `inferred`.
        label: class index when the sample is labelled (training data), else None.
        target_position: [x, y, z] metres when labelled, else None.
        objects: the ground-truth objects at the tick (`Box3D`, no score; the rig's base frame)
            when the sample is labelled with objects; [] when it is known to hold none; None
            when it is not labelled with objects (unlabelled, or a one-label file without them).
    """

    seq: int
    timestamp: float
    segments: dict[Modality, Segment]
    rig: str = "rig0"
    capture_times: dict[Modality, float] = field(default_factory=dict)
    stage_times: dict[str, float] = field(default_factory=dict)
    label: int | None = None
    target_position: tuple[float, float, float] | None = None
    objects: list[Box3D] | None = None

    @property
    def missing(self) -> tuple[Modality, ...]:
        return tuple(m for m in MODALITY_ORDER if m not in self.segments)


@dataclass
class Prediction:
    """One fused prediction (the model's output for one FusedSample; made by
    `fusion.inference.InferenceEngine`, defined here so that code handling predictions need not
    load torch). `error` is set (and probs empty) when the sample could not be used.

    Attributes:
        objects: the detected objects (`Box3D`, score in [0, 1]), highest score first, in the
            rig's base frame; those under the engine's `min_score` are left out.
        label, position: deprecated, kept for one release: the top-scoring object's class and
            centre (a model with a detection head; its "nothing" class and None when no object
            is detected), or the classifier's top class and position estimate (today's models).
        probs: the classifier head's class probabilities (every model has that head).
    """

    rig: str
    seq: int
    timestamp: float  # the fusion tick
    label: str
    probs: list[float]
    position: list[float] | None
    modalities: list[str]  # present in the sample
    latency_s: float  # capture of the sample's newest reading to this prediction, wall clock
    model_version: str
    stage_times: dict[str, float] = field(default_factory=dict)
    error: str | None = None
    objects: list[Box3D] = field(default_factory=list)

    def to_record(self) -> dict[str, Any]:
        """Plain JSON-able fields; `objects` as `object_record`s."""
        record = asdict(self)
        record["objects"] = [object_record(box) for box in self.objects]
        return record


def object_record(box: Box3D) -> dict[str, Any]:
    """One object of a prediction record: class, score, position [x, y, z] m, size [l, w, h] m,
    yaw rad, velocity [vx, vy] m/s (the rig's base frame)."""
    return {
        "class": box.class_name,
        "score": box.score,
        "position": list(box.center),
        "size": list(box.size),
        "yaw": box.yaw,
        "velocity": list(box.velocity),
    }


def object_from_record(record: Mapping[str, Any]) -> Box3D:
    """The Box3D of an `object_record` (read back from JSON lines or Parquet)."""
    return Box3D(
        class_name=record["class"],
        score=record["score"],
        center=record["position"],
        size=record["size"],
        yaw=record["yaw"],
        velocity=record["velocity"],
    )
