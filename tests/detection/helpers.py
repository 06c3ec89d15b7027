"""Boxes for the detection tests, and random worlds of them for the oracle comparisons."""

from __future__ import annotations

import numpy as np

from fusion.detection.boxes import Box3D

CAR_SIZE = (4.0, 2.0, 1.5)


def box(
    class_name: str = "car",
    x: float = 0.0,
    y: float = 0.0,
    *,
    score: float | None = None,
    size: tuple[float, float, float] = CAR_SIZE,
    yaw: float = 0.0,
    velocity: tuple[float, float] = (0.0, 0.0),
) -> Box3D:
    return Box3D(
        class_name=class_name, center=(x, y, 0.5), size=size, yaw=yaw, velocity=velocity, score=score
    )


def random_world(
    seed: int, classes: tuple[str, ...], *, samples: int = 12, score_decimals: int | None = None
) -> tuple[dict[str, list[Box3D]], dict[str, list[Box3D]]]:
    """(ground truth, predictions) by sample token: noisy copies of most true boxes (a few of
    the wrong class, a few twice), false alarms, and samples without objects or predictions.
    `score_decimals` rounds the scores, so that many tie."""
    rng = np.random.default_rng(seed)
    truth: dict[str, list[Box3D]] = {}
    predictions: dict[str, list[Box3D]] = {}
    for s in range(samples):
        token = f"sample-{seed}-{s}"
        truth[token] = [_random_box(rng, classes) for _ in range(rng.integers(0, 7))]
        found = [
            _noisy(rng, b, classes) for b in truth[token] for _ in range(rng.choice(3, p=[0.2, 0.65, 0.15]))
        ]
        alarms = [_random_box(rng, classes) for _ in range(rng.integers(0, 4))]
        scored = [_scored(rng, b, score_decimals) for b in found + alarms]
        if s % 5 != 4:  # every fifth sample has no prediction entry at all
            predictions[token] = [scored[i] for i in rng.permutation(len(scored))]
    return truth, predictions


def _random_box(rng: np.random.Generator, classes: tuple[str, ...]) -> Box3D:
    return Box3D(
        class_name=str(rng.choice(classes)),
        center=tuple(rng.uniform([-40, -40, -1], [40, 40, 2])),
        size=tuple(rng.uniform(0.3, 5.0, 3)),
        yaw=float(rng.uniform(-4, 4)),
        velocity=tuple(rng.normal(0, 4, 2)),
    )


def _noisy(rng: np.random.Generator, truth: Box3D, classes: tuple[str, ...]) -> Box3D:
    wrong_class = rng.random() < 0.1
    return Box3D(
        class_name=str(rng.choice(classes)) if wrong_class else truth.class_name,
        center=tuple(np.array(truth.center) + rng.normal(0, rng.choice([0.1, 0.4, 1.5]), 3)),
        size=tuple(np.array(truth.size) * rng.uniform(0.6, 1.5, 3)),
        yaw=truth.yaw + float(rng.normal(0, 0.6)),
        velocity=tuple(np.array(truth.velocity) + rng.normal(0, 1.0, 2)),
    )


def _scored(rng: np.random.Generator, b: Box3D, decimals: int | None) -> Box3D:
    score = float(rng.uniform(0.0, 1.0))
    return Box3D(
        class_name=b.class_name,
        center=b.center,
        size=b.size,
        yaw=b.yaw,
        velocity=b.velocity,
        score=round(score, decimals) if decimals is not None else score,
    )
