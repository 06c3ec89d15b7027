"""Ranking, greedy matching and the 101-point curves of one class at one distance threshold.

This is the nuScenes detection benchmark's `accumulate` (nuscenes-devkit,
`nuscenes/eval/detection/algo.py`), written anew and checked against it in
tests/detection/test_oracle.py:

1. The class's predictions of every sample are ranked by score, highest first. Equal scores
   keep the devkit's order: the one given later (by sample order of the mapping, then position
   in the sample's list) ranks first.
2. In that order each prediction takes the nearest ground truth of its class and sample that no
   earlier prediction took (centre distance in the ground plane; on equal distances the first
   in the list), and is a true positive when that distance is strictly below the threshold.
   Otherwise it is a false positive.
3. Precision and recall after each prediction are sampled at 101 recall points 0, 0.01, ... 1
   by linear interpolation (`numpy.interp`, precision 0 past the highest recall reached). There
   is no monotone envelope: nuScenes interpolates the raw curve.
4. The true-positive errors are running means over the matches in rank order, resampled at
   the score reached at each recall point.

A class without ground truth, or without a single match, gets the devkit's "no predictions"
curves: precision 0 and every error 1 at every recall point.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from fusion.detection.boxes import Box3D, Samples

RECALL_POINTS = 101  # recall sampled at 0, 0.01, ..., 1


class TPError(enum.StrEnum):
    """The true-positive errors of a matched prediction (the devkit's names)."""

    TRANSLATION = "trans_err"  # ATE: centre distance in the ground plane, m
    SCALE = "scale_err"  # ASE: 1 - IoU of the two boxes aligned (same centre and yaw)
    ORIENTATION = "orient_err"  # AOE: smallest yaw difference, rad
    VELOCITY = "vel_err"  # AVE: norm of the velocity difference, m/s


@dataclass(frozen=True, eq=False)
class MatchCurves:
    """One class at one distance threshold, sampled at `RECALL_POINTS` recall values.

    Attributes:
        recall: [101] 0, 0.01, ..., 1.
        precision: [101] interpolated precision at each recall; 0 past the recall reached.
        confidence: [101] interpolated score at which each recall is reached; 0 past it.
        errors: TPError -> [101] running mean of that error over the matches up to each
            recall point (units of the error).
    """

    recall: np.ndarray
    precision: np.ndarray
    confidence: np.ndarray
    errors: Mapping[TPError, np.ndarray]

    @classmethod
    def no_match(cls) -> MatchCurves:
        """The curves of a class without ground truth or without a match: precision 0, errors 1."""
        return cls(
            recall=np.linspace(0.0, 1.0, RECALL_POINTS),
            precision=np.zeros(RECALL_POINTS),
            confidence=np.zeros(RECALL_POINTS),
            errors={error: np.ones(RECALL_POINTS) for error in TPError},
        )

    @property
    def max_recall_index(self) -> int:
        """Index of the highest recall reached: the last point with a non-zero confidence."""
        reached = np.flatnonzero(self.confidence)
        return int(reached[-1]) if len(reached) else 0

    @property
    def max_recall(self) -> float:
        """The highest recall reached, on the 101-point grid."""
        return float(self.recall[self.max_recall_index])


@dataclass(frozen=True)
class _Match:
    """A prediction in rank order: its score and, when it is a true positive, its errors."""

    score: float
    errors: Mapping[TPError, float] | None


def accumulate(
    ground_truth: Samples, predictions: Samples, class_name: str, threshold: float, *, yaw_period: float
) -> MatchCurves:
    """Match one class's predictions to its ground truth at one distance threshold.

    Args:
        ground_truth: sample token -> true boxes (their scores are ignored).
        predictions: sample token -> predicted boxes, each with a score; every token must be
            in `ground_truth` (the caller checks).
        class_name: the class evaluated; boxes of other classes are ignored.
        threshold: a match needs a centre distance strictly below this, metres.
        yaw_period: 2*pi, or pi for a class whose heading is known only up to 180 degrees.

    Returns:
        The class's curves; `MatchCurves.no_match()` without ground truth or without a match.
    """
    positives = sum(box.class_name == class_name for boxes in ground_truth.values() for box in boxes)
    if positives == 0:
        return MatchCurves.no_match()
    matches = _match(ground_truth, _ranked(predictions, class_name), class_name, threshold, yaw_period)
    if not any(match.errors is not None for match in matches):
        return MatchCurves.no_match()
    return _curves(matches, positives)


def _ranked(predictions: Samples, class_name: str) -> list[tuple[str, Box3D]]:
    """(token, box) of the class's predictions, best score first; ties: later given first."""
    flat = [
        (token, box) for token, boxes in predictions.items() for box in boxes if box.class_name == class_name
    ]
    order = sorted(range(len(flat)), key=lambda i: (flat[i][1].score, i), reverse=True)
    return [flat[i] for i in order]


def _match(
    ground_truth: Samples,
    ranked: Sequence[tuple[str, Box3D]],
    class_name: str,
    threshold: float,
    yaw_period: float,
) -> list[_Match]:
    """Greedy matching in rank order: each prediction takes the nearest free ground truth."""
    truth = {token: [b for b in ground_truth[token] if b.class_name == class_name] for token, _ in ranked}
    free = {token: np.ones(len(boxes), dtype=bool) for token, boxes in truth.items()}
    matches = []
    for token, box in ranked:
        assert box.score is not None, "predictions are checked to have scores"
        index = _nearest_free(truth[token], free[token], box, threshold)
        if index is None:
            matches.append(_Match(box.score, None))
            continue
        free[token][index] = False
        matches.append(_Match(box.score, match_errors(truth[token][index], box, yaw_period)))
    return matches


def _nearest_free(truth: Sequence[Box3D], free: np.ndarray, box: Box3D, threshold: float) -> int | None:
    """Index of the nearest free box of `truth` when it is strictly nearer than `threshold`."""
    if not free.any():
        return None
    centres = np.array([t.center[:2] for t in truth])  # (G, 2)
    distances = np.linalg.norm(centres - np.array(box.center[:2]), axis=1)  # (G,)
    distances[~free] = np.inf
    index = int(np.argmin(distances))  # the first of equal distances, as the devkit's scan
    return index if distances[index] < threshold else None


def match_errors(truth: Box3D, prediction: Box3D, yaw_period: float = 2 * math.pi) -> dict[TPError, float]:
    """The four true-positive errors of one matched pair (units: see `TPError`)."""
    return {
        TPError.TRANSLATION: math.hypot(
            prediction.center[0] - truth.center[0], prediction.center[1] - truth.center[1]
        ),
        TPError.SCALE: 1.0 - aligned_iou(truth.size, prediction.size),
        TPError.ORIENTATION: yaw_difference(truth.yaw, prediction.yaw, yaw_period),
        TPError.VELOCITY: math.hypot(
            prediction.velocity[0] - truth.velocity[0], prediction.velocity[1] - truth.velocity[1]
        ),
    }


def aligned_iou(size_a: Sequence[float], size_b: Sequence[float]) -> float:
    """3-D IoU of two boxes with the same centre and yaw, from their (l, w, h) sizes."""
    intersection = math.prod(min(a, b) for a, b in zip(size_a, size_b, strict=True))
    return intersection / (math.prod(size_a) + math.prod(size_b) - intersection)


def yaw_difference(yaw_a: float, yaw_b: float, period: float = 2 * math.pi) -> float:
    """Smallest absolute difference of two headings modulo `period`, radians in [0, period / 2]."""
    difference = (yaw_a - yaw_b + period / 2) % period - period / 2
    return abs(difference)


def _curves(matches: Sequence[_Match], positives: int) -> MatchCurves:
    """Precision, confidence and the running-mean errors at the 101 recall points."""
    hit = np.array([match.errors is not None for match in matches], dtype=float)
    true_pos = np.cumsum(hit)  # (P,)
    false_pos = np.cumsum(1.0 - hit)  # (P,)
    recall = true_pos / float(positives)
    scores = np.array([match.score for match in matches])
    grid = np.linspace(0.0, 1.0, RECALL_POINTS)
    confidence = np.interp(grid, recall, scores, right=0)
    hits = [(match.score, match.errors) for match in matches if match.errors is not None]
    hit_scores = np.array([score for score, _ in hits])[::-1]  # ascending, for np.interp
    errors = {}
    for error in TPError:
        values = np.array([found[error] for _, found in hits])
        running = np.cumsum(values) / np.arange(1, len(values) + 1)
        errors[error] = np.interp(confidence[::-1], hit_scores, running[::-1])[::-1]
    return MatchCurves(
        recall=grid,
        precision=np.interp(grid, recall, true_pos / (true_pos + false_pos), right=0),
        confidence=confidence,
        errors=errors,
    )
