"""Evaluation of a detector: `fusion eval` on a model with a set-prediction head.

The model runs on a split once per subset of sensors (each alone, each pair, all three), the
other modalities' segments left out, as the live pipeline presents a missing sensor. Per
subset: the nuScenes detection metric (`fusion.detection.metrics`): mAP over classes averaged
over centre-distance thresholds 0.5, 1, 2 and 4 m, AP per class and threshold, the true-positive
errors of matched objects at 2 m (translation, scale, orientation, velocity), and mAP per
condition (day, night, clear, fog, rain), per number of objects in the scene (0, 1, 2, 3+) and
per range band of the objects (ground truth and detections both cut to the band).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fusion.detection.boxes import Box3D
from fusion.detection.metrics import DetectionConfig, DetectionMetrics, evaluate
from fusion.detection.nuscenes_format import SubmissionMeta, write_submission
from fusion.detection.subsets import in_range_band, restrict, with_condition, with_object_count
from fusion.errors import InputError
from fusion.model import Perceiver, collate
from fusion.model.detection import to_objects
from fusion.sample import FusedSample, Modality
from fusion.training.data import LabelledSet
from fusion.training.evaluate import SUBSETS, subset_name

MIN_SCORE = 0.01  # detections kept for the metric: it ranks by score, so low ones only add recall
COUNT_BANDS = ((0, 0), (1, 1), (2, 2), (3, None))  # objects in the scene: 0, 1, 2, 3+
RANGE_BANDS_M = ((0.0, 10.0), (10.0, 20.0), (20.0, 30.0), (30.0, math.inf))


@dataclass
class SubsetDetection:
    """The detection metrics of one sensor subset on one split."""

    subset: str  # modalities joined by "+" in the fixed order, e.g. "camera+lidar+microphone"
    metrics: DetectionMetrics
    by_condition: dict[str, float] = field(default_factory=dict)  # "night" -> mAP
    by_count: dict[str, float] = field(default_factory=dict)  # "3+" -> mAP
    by_range: dict[str, float] = field(default_factory=dict)  # "10-20 m" -> mAP

    @property
    def mean_ap(self) -> float:
        return self.metrics.mean_ap

    def as_json(self) -> dict[str, Any]:
        m = self.metrics
        return {
            "subset": self.subset,
            "map": m.mean_ap,
            "nds": m.nd_score,
            "ap": {c: {f"{t:g}": ap for t, ap in cm.ap.items()} for c, cm in m.classes.items()},
            "tp_errors": {str(e): v for e, v in m.tp_errors.items()},
            "tp_errors_per_class": {
                c: {str(e): v for e, v in cm.tp_errors.items()} for c, cm in m.classes.items()
            },
            "map_by_condition": self.by_condition,
            "map_by_object_count": self.by_count,
            "map_by_range": self.by_range,
        }


@dataclass
class DetectionReport:
    """Every subset's detection metrics on one split, and what they were computed on."""

    samples: int
    classes: list[str]
    results: list[SubsetDetection]
    ground_truth: dict[str, list[Box3D]]  # sample token -> boxes (for the nuScenes files)
    detections: dict[str, dict[str, list[Box3D]]]  # subset -> sample token -> boxes

    def result(self, subset: str) -> SubsetDetection:
        return next(r for r in self.results if r.subset == subset)

    def as_json(self) -> dict[str, Any]:
        return {
            "samples": self.samples,
            "classes": self.classes,
            "results": [r.as_json() for r in self.results],
        }

    def write_nuscenes(self, directory: str | Path) -> list[Path]:
        """`DIR/gt.json` and `DIR/results-<subset>.json` in the nuScenes submission format."""
        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        paths = [out / "gt.json"]
        write_submission(paths[0], self.ground_truth)
        for subset, boxes in self.detections.items():
            mods = set(subset.split("+"))
            meta = SubmissionMeta(
                use_camera="camera" in mods,
                use_lidar="lidar" in mods,
                use_radar=False,
                use_map=False,
                use_external=False,
            )
            paths.append(out / f"results-{subset}.json")
            write_submission(paths[-1], boxes, meta)
        return paths


def token(sample: FusedSample) -> str:
    """A sample's token in the nuScenes files: its rig and sequence number."""
    return f"{sample.rig}-{sample.seq:08d}"


def detect(
    model: Perceiver,
    samples: Sequence[FusedSample],
    *,
    modalities: Sequence[Modality],
    classes: Sequence[str],
    batch_size: int = 64,
    min_score: float = MIN_SCORE,
) -> list[list[Box3D]]:
    """Per sample, the model's detections seeing only `modalities` (none of them: no detection)."""
    out: list[list[Box3D]] = [[] for _ in samples]
    keep = [(i, {m: s.segments[m] for m in modalities if m in s.segments}) for i, s in enumerate(samples)]
    keep = [(i, segs) for i, segs in keep if segs]
    model.eval()
    with torch.no_grad():
        for start in range(0, len(keep), batch_size):
            chunk = keep[start : start + batch_size]
            result = model(collate([segs for _, segs in chunk]))
            if result.detections is None:
                raise InputError(f"model {model.config.name} has no detection head (model.detection)")
            for (i, _), boxes in zip(
                chunk, to_objects(result.detections, classes, min_score=min_score), strict=True
            ):
                out[i] = boxes
    return out


def _map_over(
    gt: dict[str, list[Box3D]], det: dict[str, list[Box3D]], tokens: list[str], config: DetectionConfig
) -> float:
    if not tokens:
        return math.nan
    return evaluate(restrict(gt, tokens), restrict(det, tokens), config).mean_ap


def _breakdowns(
    gt: dict[str, list[Box3D]],
    det: dict[str, list[Box3D]],
    conditions: dict[str, dict[str, str]],
    config: DetectionConfig,
) -> tuple[dict[str, float], dict[str, float], dict[str, float]]:
    by_condition = {
        label: _map_over(gt, det, with_condition(labels, label), config)
        for labels in conditions.values()
        for label in sorted(set(labels.values()))
    }
    by_count = {
        (f"{low}+" if high is None else f"{low}"): _map_over(
            gt, det, with_object_count(gt, low, high), config
        )
        for low, high in COUNT_BANDS
    }
    by_range = {}
    for near, far in RANGE_BANDS_M:
        name = f">= {near:g} m" if math.isinf(far) else f"{near:g}-{far:g} m"
        cut_gt, cut_det = in_range_band(gt, near, far), in_range_band(det, near, far)
        by_range[name] = evaluate(cut_gt, cut_det, config).mean_ap if any(cut_gt.values()) else math.nan
    return by_condition, by_count, by_range


def sample_conditions(data: LabelledSet) -> dict[str, dict[str, str]]:
    """Per condition kind ("light", "weather"), each sample token's label ("day", "fog", ...)."""
    scene = data.scene
    tokens = [token(s) for s in data.samples]
    light = np.where(np.asarray(scene["night"], dtype=bool), "night", "day")
    weather = np.asarray(scene["weather"], dtype=object)
    return {
        "light": dict(zip(tokens, map(str, light), strict=True)),
        "weather": dict(zip(tokens, map(str, weather), strict=True)),
    }


def evaluate_detection(
    model: Perceiver,
    data: LabelledSet,
    *,
    batch_size: int = 64,
    subsets: Sequence[tuple[Modality, ...]] = SUBSETS,
    progress: Callable[[str], None] | None = None,
) -> DetectionReport:
    """The detection metrics of `model` on `data` for every subset of sensors.

    Raises InputError when the model has no detection head or a sample has no object labels.
    """
    head = model.config.detection
    if head is None:
        raise InputError(f"model {model.config.name} has no detection head (model.detection)")
    classes = list(head.classes)
    missing = [s.seq for s in data.samples if s.objects is None]
    if missing:
        raise InputError(
            f"{len(missing)} samples have no object labels (first: seq {missing[0]}); "
            "generate the data with this version of `fusion data generate`"
        )
    config = DetectionConfig(classes=tuple(classes))
    gt = {token(s): list(s.objects or []) for s in data.samples}
    conditions = sample_conditions(data)
    results, detections = [], {}
    for subset in subsets:
        name = subset_name(subset)
        if progress is not None:
            progress(name)
        boxes = detect(model, data.samples, modalities=subset, classes=classes, batch_size=batch_size)
        det = {token(s): b for s, b in zip(data.samples, boxes, strict=True)}
        detections[name] = det
        by_condition, by_count, by_range = _breakdowns(gt, det, conditions, config)
        results.append(
            SubsetDetection(
                subset=name,
                metrics=evaluate(gt, det, config),
                by_condition=by_condition,
                by_count=by_count,
                by_range=by_range,
            )
        )
    return DetectionReport(
        samples=len(data.samples), classes=classes, results=results, ground_truth=gt, detections=detections
    )
