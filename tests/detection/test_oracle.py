"""The metric against two independent computations on random worlds, to ~1e-9.

1. `reference`: the nuScenes definition written out again here in plain Python, O(n^2): every
   prediction scans every ground truth box, and the interpolation is spelled out. It always runs.
2. The nuScenes devkit itself (`nuscenes.eval.detection.algo`: `accumulate`, `calc_ap`,
   `calc_tp` on `DetectionBox` / `EvalBoxes`). The devkit is not a dev dependency: 1.2.0
   requires numpy<2 (the project pins numpy 2.4), 1.1.10 and 1.1.11 pin matplotlib<3.6 and
   Shapely<2, and 1.1.9, the last one that installs beside the pins, brings jupyter and the GUI
   build of OpenCV (`opencv-python`, which overwrites the headless cv2 the project uses). Its
   evaluation modules run fine on numpy 2, so these tests run where it is installed without
   its dependencies:

       pip install --no-deps --target /tmp/nusc nuscenes-devkit==1.2.0 pyquaternion cachetools
       PYTHONPATH=/tmp/nusc pytest tests/detection/test_oracle.py

   and are skipped elsewhere. Classes are nuScenes names, since `DetectionBox` accepts no other;
   `barrier` is a half-turn class, as the devkit's `accumulate` takes it.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from fusion.detection.boxes import Box3D
from fusion.detection.matching import TPError
from fusion.detection.metrics import DetectionConfig, DetectionMetrics, evaluate
from tests.detection.helpers import random_world

CLASSES = ("car", "pedestrian", "barrier")
CONFIG = DetectionConfig(classes=CLASSES, half_turn_classes={"barrier"})
# (seed, score decimals): six with distinct scores, four with scores in tenths (many ties)
WORLDS = [(seed, None) for seed in range(6)] + [(seed, 1) for seed in range(100, 104)]
GRID = np.linspace(0.0, 1.0, 101)


# --------------------------------------------------------------------------- the reference


def ref_interp(x: float, xp: list[float], fp: list[float], right: float | None = None) -> float:
    """numpy.interp's rule, spelled out: on tied xp the last one's value counts."""
    if x < xp[0]:
        return fp[0]
    if x > xp[-1]:
        return fp[-1] if right is None else right
    j = max(i for i in range(len(xp)) if xp[i] <= x)
    if xp[j] == x or j == len(xp) - 1:
        return fp[j]
    return fp[j] + (fp[j + 1] - fp[j]) * (x - xp[j]) / (xp[j + 1] - xp[j])


def ref_errors(truth: Box3D, pred: Box3D, period: float) -> dict[TPError, float]:
    turn = (truth.yaw - pred.yaw) % period
    inter = math.prod(min(a, b) for a, b in zip(truth.size, pred.size, strict=True))
    return {
        TPError.TRANSLATION: math.dist(truth.center[:2], pred.center[:2]),
        TPError.SCALE: 1 - inter / (math.prod(truth.size) + math.prod(pred.size) - inter),
        TPError.ORIENTATION: min(turn, period - turn),
        TPError.VELOCITY: math.dist(truth.velocity, pred.velocity),
    }


def ref_match(truth, predictions, name, threshold, period):
    """[(score, errors or None)] in rank order."""
    flat = [(token, box) for token, boxes in predictions.items() for box in boxes if box.class_name == name]
    ranked = [flat[i] for i in sorted(range(len(flat)), key=lambda i: (-flat[i][1].score, -i))]
    taken: set[tuple[str, int]] = set()
    rows = []
    for token, pred in ranked:
        best, best_d = None, math.inf
        for g, gt in enumerate(truth[token]):
            d = math.dist(gt.center[:2], pred.center[:2])
            if gt.class_name == name and (token, g) not in taken and d < best_d:
                best, best_d = g, d
        if best is not None and best_d < threshold:
            taken.add((token, best))
            rows.append((pred.score, ref_errors(truth[token][best], pred, period)))
        else:
            rows.append((pred.score, None))
    return rows


def ref_class(truth, predictions, name, threshold, period):
    """(precision [101], errors {TPError: [101]}, max recall index), or None for no match."""
    positives = sum(b.class_name == name for boxes in truth.values() for b in boxes)
    rows = ref_match(truth, predictions, name, threshold, period) if positives else []
    hits = [(score, errors) for score, errors in rows if errors is not None]
    if not hits:
        return None
    tp = [sum(e is not None for _, e in rows[: k + 1]) for k in range(len(rows))]
    recall = [t / positives for t in tp]
    precision = [t / (k + 1) for k, t in enumerate(tp)]
    scores = [score for score, _ in rows]
    conf = [ref_interp(r, recall, scores, right=0.0) for r in GRID]
    hit_scores = [score for score, _ in reversed(hits)]
    curves = {}
    for err in TPError:
        running = [sum(e[err] for _, e in hits[: k + 1]) / (k + 1) for k in range(len(hits))]
        curves[err] = [ref_interp(c, hit_scores, running[::-1]) for c in conf]
    last = max((i for i, c in enumerate(conf) if c != 0), default=0)
    return [ref_interp(r, recall, precision, right=0.0) for r in GRID], curves, last


def reference(truth, predictions, config: DetectionConfig):
    """{class: ({threshold: AP}, {TPError: error})}."""
    first = round(100 * config.min_recall) + 1
    out = {}
    for name in config.classes:
        period = config.yaw_period(name)
        aps = {}
        for t in config.thresholds:
            found = ref_class(truth, predictions, name, t, period)
            above = [max(p - config.min_precision, 0.0) for p in found[0][first:]] if found else [0.0]
            aps[t] = sum(above) / len(above) / (1 - config.min_precision)
        found = ref_class(truth, predictions, name, config.tp_threshold, period)
        if found is None or found[2] < first:
            errors = dict.fromkeys(TPError, 1.0)
        else:
            errors = {e: float(np.mean(found[1][e][first : found[2] + 1])) for e in TPError}
        out[name] = (aps, errors)
    return out


def assert_agrees(metrics: DetectionMetrics, expected) -> None:
    for name, (aps, errors) in expected.items():
        assert dict(metrics.classes[name].ap) == pytest.approx(aps, abs=1e-9), name
        assert dict(metrics.classes[name].tp_errors) == pytest.approx(errors, abs=1e-9), name


@pytest.mark.parametrize(("seed", "decimals"), WORLDS)
def test_agrees_with_the_plain_reference(seed, decimals):
    truth, predictions = random_world(seed, CLASSES, score_decimals=decimals)
    metrics = evaluate(truth, predictions, CONFIG)
    assert_agrees(metrics, reference(truth, predictions, CONFIG))
    assert 0.0 < metrics.mean_ap < 1.0  # the worlds are neither trivial nor hopeless


# --------------------------------------------------------------------------- the devkit


@pytest.fixture(scope="module")
def devkit():
    import nuscenes.eval.detection.algo as algo  # deploy/test-oracles.txt: `make` installs it

    return algo


def devkit_boxes(samples, tokens):
    from nuscenes.eval.common.data_classes import EvalBoxes
    from nuscenes.eval.detection.data_classes import DetectionBox

    from fusion.detection.nuscenes_format import to_submission

    boxes = EvalBoxes()
    results = to_submission(samples)["results"]
    for token in tokens:
        boxes.add_boxes(token, [DetectionBox.deserialize(record) for record in results.get(token, [])])
    return boxes


def devkit_metrics(devkit, truth, predictions, config: DetectionConfig):
    from nuscenes.eval.common.utils import center_distance

    gt = devkit_boxes(truth, truth)
    pred = devkit_boxes(predictions, predictions)
    out = {}
    for name in config.classes:
        data = {t: devkit.accumulate(gt, pred, name, center_distance, t) for t in config.thresholds}
        aps = {t: devkit.calc_ap(md, config.min_recall, config.min_precision) for t, md in data.items()}
        md = data[config.tp_threshold]
        out[name] = (aps, {e: devkit.calc_tp(md, config.min_recall, e.value) for e in TPError}, data)
    return out


@pytest.mark.parametrize(("seed", "decimals"), WORLDS)
def test_agrees_with_the_nuscenes_devkit(devkit, seed, decimals):
    truth, predictions = random_world(seed, CLASSES, score_decimals=decimals)
    metrics = evaluate(truth, predictions, CONFIG)
    expected = devkit_metrics(devkit, truth, predictions, CONFIG)
    assert_agrees(metrics, {name: (aps, errors) for name, (aps, errors, _) in expected.items()})
    for name, (_, _, data) in expected.items():
        for t, md in data.items():
            curves = metrics.classes[name].curves[t]
            np.testing.assert_allclose(curves.precision, md.precision, atol=1e-9)
            np.testing.assert_allclose(curves.confidence, md.confidence, atol=1e-9)
            for e in TPError:
                np.testing.assert_allclose(curves.errors[e], getattr(md, e.value), atol=1e-9)
