"""The nuScenes detection metric: AP per class and distance threshold, mAP, TP errors, NDS.

The definition is the nuScenes detection benchmark's (nuscenes-devkit 1.2.0,
`nuscenes/eval/detection/`: `accumulate`, `calc_ap`, `calc_tp`, `DetectionMetrics`), written
anew here and checked against the devkit in tests/detection/test_oracle.py:

- AP of a class at a threshold: the mean over the recall points above `min_recall` of
  max(precision - min_precision, 0), divided by (1 - min_precision).
- mAP: the mean of AP over classes and thresholds.
- TP errors of a class: at `tp_threshold`, the mean of each running-mean error over the recall
  points above `min_recall` up to the highest recall reached; 1.0 when that recall is not above
  `min_recall` (no match at all included). The summary error is the mean over classes.
- NDS-like score: (mean_ap_weight * mAP + sum over errors of max(1 - error, 0))
  / (mean_ap_weight + number of errors).

Where the devkit's choices needed interpreting (see each place): a class of `config.classes`
without ground truth counts, as in the devkit, with AP 0 at every threshold and every TP error
1.0 (it is in the means: evaluate a subset with only the classes it has, when that is what you
want). The summary has four TP errors, not five: these boxes carry no attribute, and the
devkit's attribute error would be a constant 1. The devkit's per-class exceptions for its own
classes (no orientation and velocity error for traffic cones, no velocity error for barriers)
are not built in; a heading known only up to 180 degrees (nuScenes: barrier) is
`half_turn_classes`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from fusion.detection.boxes import Samples
from fusion.detection.matching import MatchCurves, TPError, accumulate
from fusion.errors import InputError

NUSCENES_THRESHOLDS = (0.5, 1.0, 2.0, 4.0)  # metres, the benchmark's centre-distance thresholds


@dataclass(frozen=True, kw_only=True)
class DetectionConfig:
    """What is evaluated and how (defaults: the nuScenes `detection_cvpr_2019` config).

    Attributes:
        classes: the classes evaluated and averaged over; any other class is an error.
        thresholds: centre-distance thresholds for a match, metres, each > 0.
        tp_threshold: the threshold at which TP errors are measured; one of `thresholds`.
        min_recall: recall points at or below this are left out of AP and TP errors.
        min_precision: precision at or below this counts as 0 in AP.
        max_boxes_per_sample: most predictions one sample may have (nuScenes: 500).
        mean_ap_weight: weight of mAP against each TP score in the NDS-like summary.
        half_turn_classes: classes whose heading is known only up to 180 degrees: their
            orientation error is taken modulo pi.
    """

    classes: tuple[str, ...]
    thresholds: tuple[float, ...] = NUSCENES_THRESHOLDS
    tp_threshold: float = 2.0
    min_recall: float = 0.1
    min_precision: float = 0.1
    max_boxes_per_sample: int = 500
    mean_ap_weight: float = 5.0
    half_turn_classes: frozenset[str] = field(default_factory=frozenset)

    def __post_init__(self) -> None:
        object.__setattr__(self, "classes", tuple(self.classes))
        object.__setattr__(self, "thresholds", tuple(float(t) for t in self.thresholds))
        object.__setattr__(self, "half_turn_classes", frozenset(self.half_turn_classes))
        self._check_classes()
        self._check_thresholds()
        if not 0.0 <= self.min_recall <= 1.0:
            raise InputError(f"DetectionConfig min_recall is {self.min_recall}: it must be in [0, 1]")
        if not 0.0 <= self.min_precision < 1.0:
            raise InputError(f"DetectionConfig min_precision is {self.min_precision}: it must be in [0, 1)")
        if self.max_boxes_per_sample < 1:
            raise InputError(
                f"DetectionConfig max_boxes_per_sample is {self.max_boxes_per_sample}: it must be >= 1"
            )
        if self.mean_ap_weight < 0:
            raise InputError(f"DetectionConfig mean_ap_weight is {self.mean_ap_weight}: it must be >= 0")

    def _check_classes(self) -> None:
        if not self.classes or len(set(self.classes)) != len(self.classes):
            raise InputError(
                f"DetectionConfig classes must be distinct and at least one: {list(self.classes)}"
            )
        unknown = sorted(self.half_turn_classes - set(self.classes))
        if unknown:
            raise InputError(
                f"DetectionConfig half_turn_classes {unknown} are not in classes {list(self.classes)}"
            )

    def _check_thresholds(self) -> None:
        if not self.thresholds or any(not t > 0 for t in self.thresholds):
            raise InputError(
                f"DetectionConfig thresholds must be > 0 m and at least one: {list(self.thresholds)}"
            )
        if self.tp_threshold not in self.thresholds:
            raise InputError(
                f"DetectionConfig tp_threshold {self.tp_threshold} is not one of thresholds {list(self.thresholds)}"
            )

    def yaw_period(self, class_name: str) -> float:
        """The period of the class's heading, radians: pi for a half-turn class, else 2*pi."""
        return math.pi if class_name in self.half_turn_classes else 2 * math.pi


@dataclass(frozen=True)
class ClassMetrics:
    """The metric of one class.

    Attributes:
        class_name: the class.
        ground_truth: number of true boxes of the class over all samples.
        predictions: number of predicted boxes of the class over all samples.
        ap: threshold (m) -> average precision in [0, 1].
        tp_errors: TPError -> the class's error at the TP threshold (units of the error).
        curves: threshold (m) -> the 101-point precision, confidence and error curves.
    """

    class_name: str
    ground_truth: int
    predictions: int
    ap: Mapping[float, float]
    tp_errors: Mapping[TPError, float]
    curves: Mapping[float, MatchCurves]

    @property
    def mean_ap(self) -> float:
        """AP averaged over the thresholds."""
        return float(np.mean(list(self.ap.values())))


@dataclass(frozen=True)
class DetectionMetrics:
    """The metric of a whole evaluation: per class and the summaries over classes.

    Attributes:
        config: the configuration it was computed with.
        classes: class name -> its metric, in the order of `config.classes`.
    """

    config: DetectionConfig
    classes: Mapping[str, ClassMetrics]

    @property
    def mean_ap(self) -> float:
        """mAP: AP averaged over classes and thresholds."""
        return float(np.mean([metric.mean_ap for metric in self.classes.values()]))

    @property
    def tp_errors(self) -> dict[TPError, float]:
        """Each TP error averaged over classes."""
        return {
            error: float(np.mean([metric.tp_errors[error] for metric in self.classes.values()]))
            for error in TPError
        }

    @property
    def tp_scores(self) -> dict[TPError, float]:
        """Each mean TP error as a score: max(1 - error, 0)."""
        return {error: max(0.0, 1.0 - value) for error, value in self.tp_errors.items()}

    @property
    def nd_score(self) -> float:
        """NDS-like summary in [0, 1]: weighted mAP and the four TP scores (module docstring)."""
        scores = self.tp_scores
        weight = self.config.mean_ap_weight
        return (weight * self.mean_ap + sum(scores.values())) / (weight + len(scores))


def evaluate(ground_truth: Samples, predictions: Samples, config: DetectionConfig) -> DetectionMetrics:
    """The detection metric of `predictions` against `ground_truth`.

    Args:
        ground_truth: sample token -> its true boxes (scores ignored). Every evaluated sample
            is here, with an empty list when it holds no object.
        predictions: sample token -> predicted boxes, each with a score. A sample left out
            has no prediction; a token not in `ground_truth` is an error.
        config: classes, thresholds and the constants of the metric.

    Returns:
        AP per class and threshold, TP errors per class, and their summaries.

    Raises:
        InputError: a class not in `config.classes`, a prediction without a score, a sample
            with more than `config.max_boxes_per_sample` predictions, or a prediction for a
            sample that has no ground truth entry; the message names sample and box.
    """
    _check_inputs(ground_truth, predictions, config)
    return DetectionMetrics(
        config=config,
        classes={name: _class_metrics(ground_truth, predictions, name, config) for name in config.classes},
    )


def average_precision(curves: MatchCurves, min_recall: float, min_precision: float) -> float:
    """AP from a class's curves (the devkit's `calc_ap`).

    The recall point at `min_recall` itself is left out: the mean runs over the points strictly
    above it (indices round(100 * min_recall) + 1 to 100).
    """
    above = curves.precision[round(100 * min_recall) + 1 :]  # (101 - first,)
    return float(np.mean(np.clip(above - min_precision, 0.0, None))) / (1.0 - min_precision)


def tp_error(curves: MatchCurves, error: TPError, min_recall: float) -> float:
    """One TP error from a class's curves (the devkit's `calc_tp`).

    The mean of the running-mean error over the recall points above `min_recall` up to and
    including the highest recall reached; 1.0 when that recall is not above `min_recall`.
    """
    first = round(100 * min_recall) + 1
    last = curves.max_recall_index
    if last < first:
        return 1.0
    return float(np.mean(curves.errors[error][first : last + 1]))


def _check_inputs(ground_truth: Samples, predictions: Samples, config: DetectionConfig) -> None:
    """Raise `InputError` for what `evaluate` cannot use (see there); the message names it."""
    known = set(config.classes)
    for token, boxes in ground_truth.items():
        for index, box in enumerate(boxes):
            if box.class_name not in known:
                raise InputError(
                    f"ground truth of sample {token!r}, box {index}: class {box.class_name!r} "
                    f"is not one of {list(config.classes)}"
                )
    for token, boxes in predictions.items():
        if token not in ground_truth:
            raise InputError(f"predictions for sample {token!r}, which has no ground truth entry")
        if len(boxes) > config.max_boxes_per_sample:
            raise InputError(
                f"sample {token!r} has {len(boxes)} predictions, more than max_boxes_per_sample "
                f"{config.max_boxes_per_sample}"
            )
        for index, box in enumerate(boxes):
            if box.class_name not in known:
                raise InputError(
                    f"prediction {index} of sample {token!r}: class {box.class_name!r} "
                    f"is not one of {list(config.classes)}"
                )
            if box.score is None:
                raise InputError(f"prediction {index} of sample {token!r} has no score")


def _class_metrics(
    ground_truth: Samples, predictions: Samples, class_name: str, config: DetectionConfig
) -> ClassMetrics:
    period = config.yaw_period(class_name)
    curves = {
        t: accumulate(ground_truth, predictions, class_name, t, yaw_period=period) for t in config.thresholds
    }
    return ClassMetrics(
        class_name=class_name,
        ground_truth=_count(ground_truth, class_name),
        predictions=_count(predictions, class_name),
        ap={t: average_precision(c, config.min_recall, config.min_precision) for t, c in curves.items()},
        tp_errors={e: tp_error(curves[config.tp_threshold], e, config.min_recall) for e in TPError},
        curves=curves,
    )


def _count(samples: Samples, class_name: str) -> int:
    return sum(box.class_name == class_name for boxes in samples.values() for box in boxes)
