"""The detection metric on cases small enough to compute by hand."""

import dataclasses
import math

import numpy as np
import pytest

from fusion.detection.matching import TPError
from fusion.detection.metrics import NUSCENES_THRESHOLDS, DetectionConfig, evaluate
from fusion.errors import InputError
from tests.detection.helpers import box

CONFIG = DetectionConfig(classes=("car", "pedestrian"))


def perfect(truth):
    return {
        t: [dataclasses.replace(b, score=0.9 - 0.01 * i) for i, b in enumerate(bs)] for t, bs in truth.items()
    }


TRUTH = {
    "a": [box("car", 10, 0), box("pedestrian", 5, 5, size=(0.6, 0.6, 1.8))],
    "b": [box("car", -8, 3), box("car", 20, -4)],
}


def test_perfect_predictions_score_one():
    metrics = evaluate(TRUTH, perfect(TRUTH), CONFIG)
    # 0.9 / 0.9 in floating point, as in the devkit: 1.0000000000000004
    assert metrics.mean_ap == pytest.approx(1.0, abs=1e-12)
    assert all(ap == pytest.approx(1.0, abs=1e-12) for c in metrics.classes.values() for ap in c.ap.values())
    assert metrics.tp_errors == dict.fromkeys(TPError, 0.0)
    assert metrics.nd_score == pytest.approx(1.0, abs=1e-12)
    assert metrics.classes["car"].ground_truth == 3 and metrics.classes["car"].predictions == 3


def test_no_predictions_score_zero_and_errors_one():
    metrics = evaluate(TRUTH, {}, CONFIG)
    assert metrics.mean_ap == 0.0
    assert metrics.tp_errors == dict.fromkeys(TPError, 1.0)
    assert metrics.nd_score == 0.0


def test_predictions_of_the_wrong_class_score_zero():
    swapped = {"car": "pedestrian", "pedestrian": "car"}
    wrong = {
        t: [dataclasses.replace(b, class_name=swapped[b.class_name]) for b in bs]
        for t, bs in perfect(TRUTH).items()
    }
    assert evaluate(TRUTH, wrong, CONFIG).mean_ap == 0.0


def test_a_class_without_ground_truth_counts_as_zero_as_in_the_devkit():
    cars = {"a": [box("car", 10, 0)]}
    metrics = evaluate(cars, perfect(cars), CONFIG)
    pedestrian = metrics.classes["pedestrian"]
    assert pedestrian.ground_truth == 0 and pedestrian.mean_ap == 0.0
    assert pedestrian.tp_errors == dict.fromkeys(TPError, 1.0)
    assert metrics.mean_ap == pytest.approx(0.5)
    assert metrics.tp_errors == dict.fromkeys(TPError, 0.5)
    assert evaluate(cars, perfect(cars), DetectionConfig(classes=("car",))).mean_ap == pytest.approx(1.0)


def test_a_duplicate_lowers_precision_by_the_hand_computed_amount():
    truth = {"a": [box("car", 0, 0), box("car", 30, 0)]}
    predictions = {
        "a": [box("car", 0, 0, score=0.9), box("car", 0.1, 0, score=0.8), box("car", 30, 0, score=0.7)]
    }
    # Ranked: TP, FP (the duplicate), TP: precision 1, 1/2, 2/3 at recall 1/2, 1/2, 1. Sampled:
    # 1 below recall 0.5, then (last of the tied points) 1/2 rising linearly to 2/3 at recall 1.
    # Over the 90 points above recall 0.1: 39 at 0.9, then sum_k=0..50 (0.4 + k/300).
    expected = (39 * 0.9 + 51 * 0.4 + 50 * 51 / 2 / 300) / 90 / 0.9
    ap = evaluate(truth, predictions, CONFIG).classes["car"].ap
    assert ap == pytest.approx(dict.fromkeys(NUSCENES_THRESHOLDS, expected), abs=1e-12)
    assert expected == pytest.approx(0.7376543209876543)


def test_tied_scores_rank_the_later_prediction_first_as_the_devkit():
    truth = {"a": [box("car", 0, 0)]}
    hit, miss = box("car", 0, 0, score=0.5), box("car", 50, 0, score=0.5)
    # hit ranked first: precision 1, then 1/2 at recall 1 -> (89 * 0.9 + 0.4) / 90 / 0.9.
    assert evaluate(truth, {"a": [miss, hit]}, CONFIG).classes["car"].ap[2.0] == pytest.approx(80.5 / 81)
    # miss ranked first: precision rises linearly from 0 at recall 0 to 1/2 at recall 1.
    assert evaluate(truth, {"a": [hit, miss]}, CONFIG).classes["car"].ap[2.0] == pytest.approx(0.2)


def test_equal_distances_match_the_first_ground_truth_in_the_list():
    truth = {"a": [box("car", 1, 0), box("car", -1, 0, size=(2.0, 1.0, 1.0))]}
    metrics = evaluate(truth, {"a": [box("car", 0, 0, score=0.5)]}, CONFIG)
    # one of two found: recall 0.5, so the errors are measured; the first box has the same size
    assert metrics.classes["car"].tp_errors[TPError.SCALE] == 0.0
    assert metrics.classes["car"].tp_errors[TPError.TRANSLATION] == 1.0


@pytest.mark.parametrize("threshold", NUSCENES_THRESHOLDS)
@pytest.mark.parametrize(("offset", "inside"), [(-1e-9, True), (0.0, False), (1e-9, False)])
def test_a_match_needs_a_distance_strictly_below_the_threshold(threshold, offset, inside):
    truth = {"a": [box("car", 10, 5)]}
    prediction = box("car", 10 + threshold + offset, 5, score=0.5)
    ap = evaluate(truth, {"a": [prediction]}, CONFIG).classes["car"].ap
    for t, value in ap.items():
        matched = t > threshold or (t == threshold and inside)
        assert value == pytest.approx(1.0 if matched else 0.0, abs=1e-12), t


def test_height_does_not_count_in_the_distance():
    truth = {"a": [box("car", 0, 0)]}
    lifted = dataclasses.replace(box("car", 0, 0, score=0.5), center=(0.0, 0.0, 30.0))
    assert evaluate(truth, {"a": [lifted]}, CONFIG).mean_ap == pytest.approx(0.5)  # car 1, pedestrian 0


def test_tp_errors_of_a_hand_made_pair():
    truth = {"a": [box("car", 10, 0, yaw=0.0, velocity=(5.0, 0.0))]}
    prediction = box(
        "car", 10.3, 0, score=0.8, size=(2.0, 1.0, 0.75), yaw=math.radians(10), velocity=(5.0, 0.5)
    )
    errors = evaluate(truth, {"a": [prediction]}, CONFIG).classes["car"].tp_errors
    assert errors[TPError.TRANSLATION] == pytest.approx(0.3)
    assert errors[TPError.SCALE] == pytest.approx(1 - 1 / 8)  # half of each side: 1/8 of the volume
    assert errors[TPError.ORIENTATION] == pytest.approx(math.radians(10))
    assert errors[TPError.VELOCITY] == pytest.approx(0.5)


@pytest.mark.parametrize(
    ("truth_yaw", "predicted_yaw", "half_turn", "expected"),
    [
        (math.radians(179), math.radians(-179), False, math.radians(2)),
        (0.0, 4 * math.pi + 0.25, False, 0.25),
        (0.0, math.pi - 0.1, False, math.pi - 0.1),
        (0.0, math.pi - 0.1, True, 0.1),
    ],
)
def test_orientation_error_is_the_smallest_difference_modulo_the_period(
    truth_yaw, predicted_yaw, half_turn, expected
):
    config = DetectionConfig(classes=("car",), half_turn_classes={"car"} if half_turn else set())
    truth = {"a": [box("car", yaw=truth_yaw)]}
    metrics = evaluate(truth, {"a": [box("car", yaw=predicted_yaw, score=0.5)]}, config)
    assert metrics.classes["car"].tp_errors[TPError.ORIENTATION] == pytest.approx(expected)


def test_tp_errors_are_one_when_recall_stays_at_min_recall():
    truth = {"a": [box("car", 10 * i, 0) for i in range(10)]}
    found_one = {"a": [box("car", 0.2, 0, score=0.5)]}  # recall 0.1, not above min_recall
    car = evaluate(truth, found_one, CONFIG).classes["car"]
    assert car.tp_errors == dict.fromkeys(TPError, 1.0)
    assert car.ap[2.0] == 0.0
    assert car.curves[2.0].max_recall == pytest.approx(0.1)


def test_curves_hold_101_points_for_plotting():
    curves = evaluate(TRUTH, perfect(TRUTH), CONFIG).classes["car"].curves[0.5]
    assert curves.recall.shape == curves.precision.shape == curves.confidence.shape == (101,)
    assert set(curves.errors) == set(TPError)
    assert np.all(curves.precision == 1.0) and curves.max_recall == 1.0


@pytest.mark.parametrize(
    ("truth", "predictions", "named"),
    [
        ({"a": [box("bus")]}, {}, "class 'bus'"),
        (TRUTH, {"a": [box("bus", score=0.5)]}, "class 'bus'"),
        (TRUTH, {"a": [box("car")]}, "prediction 0 of sample 'a' has no score"),
        (TRUTH, {"zz": []}, "sample 'zz'"),
        (TRUTH, {"a": [box("car", score=0.5)] * 501}, "501 predictions"),
    ],
)
def test_inputs_the_metric_cannot_use_are_named(truth, predictions, named):
    with pytest.raises(InputError, match=named):
        evaluate(truth, predictions, CONFIG)


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"classes": ()}, "classes"),
        ({"classes": ("car", "car")}, "classes"),
        ({"thresholds": (0.5, -1.0)}, "thresholds"),
        ({"tp_threshold": 3.0}, "tp_threshold 3.0"),
        ({"min_precision": 1.0}, "min_precision"),
        ({"min_recall": 1.5}, "min_recall"),
        ({"half_turn_classes": {"barrier"}}, "barrier"),
    ],
)
def test_a_bad_config_is_named(change, named):
    with pytest.raises(InputError, match=named):
        DetectionConfig(**{"classes": ("car",), **change})
