import math

import numpy as np
import pytest
import torch

from fusion.errors import InputError
from fusion.inference import CLASSIFIER_BOX_SIZE, DEFAULT_MIN_SCORE, InferenceEngine, pick_device
from fusion.model import ModalityInput, ModelConfig, build_model
from fusion.model.detection import DetectionOutput
from fusion.model.perceiver import PerceiverOutput
from fusion.sample import FusedSample, Modality, Segment
from pipelines.config import InferenceConfig
from tests.model.conftest import tiny_config


def sample(seq: int, points: int, *, nan: bool = False) -> FusedSample:
    rng = np.random.default_rng(seq)
    lidar_values = rng.random((points, 2), dtype=np.float32)
    if nan:
        lidar_values[0, 0] = np.nan
    return FusedSample(
        seq=seq,
        timestamp=seq * 0.1,
        segments={
            Modality.CAMERA: Segment(values=rng.random((64, 3), dtype=np.float32), grid=(8, 8)),
            Modality.LIDAR: Segment(
                values=lidar_values, positions=rng.uniform(-1, 1, (points, 3)).astype(np.float32)
            ),
        },
        stage_times={"capture.camera": 100.0, "capture.lidar": 99.5, "fused": 100.2},
    )


def engine() -> InferenceEngine:
    torch.manual_seed(0)
    return InferenceEngine(build_model(tiny_config()), model_version="test-1")


def test_cpu_is_picked_without_cuda():
    assert pick_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")


def test_batched_predictions_match_single_ones_and_carry_metadata():
    eng = engine()
    samples = [sample(0, 10), sample(1, 25), sample(2, 17)]
    batched = eng.predict(samples)
    assert [p.seq for p in batched] == [0, 1, 2]
    for s, p in zip(samples, batched, strict=True):
        alone = eng.predict([s])[0]
        np.testing.assert_allclose(p.probs, alone.probs, atol=1e-5)
        assert abs(sum(p.probs) - 1) < 1e-5 and p.label in eng.class_names
        assert p.modalities == ["camera", "lidar"] and p.model_version == "test-1"
        assert p.latency_s > 0 and p.stage_times["inferred"] >= p.stage_times["fused"]
        assert p.position is not None and len(p.position) == 3


def test_a_bad_sample_is_isolated_from_its_batch():
    preds = engine().predict([sample(0, 10), sample(1, 10, nan=True), sample(2, 10)])
    assert [p.error is None for p in preds] == [True, False, True]
    assert "lidar: values contain NaN" in (preds[1].error or "")


def test_warm_up_runs_the_model_and_leaves_its_answers_unchanged():
    warm, cold = engine(), engine()
    calls = []
    warm.model.register_forward_hook(lambda module, args, out: calls.append(out.logits.shape))
    warm.warm_up()
    assert calls and calls[0][0] == 1  # one forward, batch 1, on the config's example shapes
    samples = [sample(0, 10), sample(1, 25)]
    for a, b in zip(warm.predict(samples), cold.predict(samples), strict=True):
        assert a.probs == b.probs and a.position == b.position


# ---- objects ------------------------------------------------------------------------------
CLASSES = ["nothing", "pedestrian", "car", "truck", "cyclist"]  # a classifier's, "nothing" first
OBJECT_CLASSES = ["pedestrian", "car"]  # a detection head's ("nothing" is implicit, last)


class StubModel(torch.nn.Module):
    """A model that answers every sample of a batch with one fixed output, of a real model's
    shapes: logits [1, num_classes], position [1, 3] or None, detections [1, Q, ...] or None."""

    def __init__(
        self,
        config: ModelConfig,
        *,
        logits: list[float],
        position: list[float] | None,
        detections: DetectionOutput | None = None,
    ) -> None:
        super().__init__()
        self.config = config
        self.logits = torch.tensor([logits])
        self.position = None if position is None else torch.tensor([position])
        self.detections = detections

    def forward(self, batch: dict[Modality, ModalityInput]) -> PerceiverOutput:
        b = next(iter(batch.values())).values.shape[0]
        det = self.detections
        return PerceiverOutput(
            logits=self.logits.expand(b, -1),
            position=None if self.position is None else self.position.expand(b, -1),
            detections=None
            if det is None
            else DetectionOutput(
                logits=det.logits.expand(b, -1, -1),
                boxes=det.boxes.expand(b, -1, -1),
                raw=det.raw.expand(b, -1, -1),
            ),
        )


def logits_for(probs: list[float]) -> list[float]:
    """Logits whose softmax is `probs`."""
    return [math.log(p) for p in probs]


def classifier(probs: list[float], position: list[float] | None = None, **kw) -> InferenceEngine:
    """A classifier answering `probs`, its position estimate `position` ([3, -1.5, 0.25] when
    None; []: the model has no position head)."""
    config = tiny_config(class_names=CLASSES, position_dims=0 if position == [] else 3)
    where = None if position == [] else (position or [3.0, -1.5, 0.25])
    model = StubModel(config, logits=logits_for(probs), position=where)
    return InferenceEngine(model, model_version="stub", device="cpu", **kw)  # type: ignore[arg-type]


def test_the_classifier_gives_its_top_class_as_one_placeholder_box():
    (pred,) = classifier([0.1, 0.1, 0.6, 0.1, 0.1]).predict([sample(0, 10)])
    (box,) = pred.objects
    assert (box.class_name, box.center, box.size, box.yaw, box.velocity) == (
        "car",
        (3.0, -1.5, 0.25),
        CLASSIFIER_BOX_SIZE,
        0.0,
        (0.0, 0.0),
    )
    assert box.score == pytest.approx(0.6) and box.score == pytest.approx(max(pred.probs))
    assert pred.label == "car" and pred.position == [3.0, -1.5, 0.25]  # the deprecated fields


def test_the_classifier_gives_no_object_for_nothing_a_low_score_or_no_position():
    nothing = classifier([0.6, 0.1, 0.1, 0.1, 0.1]).predict([sample(0, 10)])[0]
    assert nothing.objects == [] and nothing.label == "nothing"
    unsure = classifier([0.1, 0.1, 0.4, 0.2, 0.2], min_score=0.5).predict([sample(0, 10)])[0]
    assert unsure.objects == [] and unsure.label == "car"  # the label stays the classifier's
    sure = classifier([0.1, 0.1, 0.4, 0.2, 0.2], min_score=0.4).predict([sample(0, 10)])[0]
    assert [b.class_name for b in sure.objects] == ["car"]  # min_score is inclusive
    nowhere = classifier([0.1, 0.1, 0.6, 0.1, 0.1], position=[]).predict([sample(0, 10)])[0]
    assert nowhere.objects == [] and nowhere.label == "car" and nowhere.position is None


# Three queries: a pedestrian (p 0.8), one that sees nothing, a car (p 0.5).
QUERY_PROBS = [[0.8, 0.1, 0.1], [0.05, 0.15, 0.8], [0.2, 0.5, 0.3]]
QUERY_BOXES = [
    [4.0, 2.0, 0.9, 0.6, 0.7, 1.8, 0.25, 1.0, -0.5],
    [9.0, 9.0, 0.0, 1.0, 1.0, 1.0, 0.0, 0.0, 0.0],
    [12.5, -1.25, 0.75, 4.5, 1.8, 1.5, -2.5, 3.0, 0.0],
]


def detector(**kw) -> InferenceEngine:
    config = tiny_config(class_names=CLASSES, detection={"classes": OBJECT_CLASSES, "num_queries": 3})
    detections = DetectionOutput(
        logits=torch.tensor([[logits_for(p) for p in QUERY_PROBS]]),
        boxes=torch.tensor([QUERY_BOXES]),
        raw=torch.zeros(1, 3, 10),
    )
    model = StubModel(
        config, logits=logits_for([0.1, 0.1, 0.6, 0.1, 0.1]), position=[0.0, 0.0, 0.0], detections=detections
    )
    return InferenceEngine(model, model_version="stub", device="cpu", **kw)  # type: ignore[arg-type]


def test_a_detection_head_gives_its_objects_highest_score_first():
    preds = detector().predict([sample(0, 10), sample(1, 20)])
    for pred in preds:
        assert [(b.class_name, b.score) for b in pred.objects] == [
            ("pedestrian", pytest.approx(0.8)),
            ("car", pytest.approx(0.5)),
        ]
        walker, car = pred.objects
        assert walker.center == pytest.approx((4.0, 2.0, 0.9)) and walker.size == pytest.approx(
            (0.6, 0.7, 1.8)
        )
        assert walker.yaw == pytest.approx(0.25) and walker.velocity == pytest.approx((1.0, -0.5))
        assert car.center == pytest.approx((12.5, -1.25, 0.75)) and car.yaw == pytest.approx(-2.5)
        # The deprecated fields are the top-scoring object's; probs stay the classifier head's.
        assert pred.label == "pedestrian" and pred.position == pytest.approx([4.0, 2.0, 0.9])
        assert pred.probs == pytest.approx([0.1, 0.1, 0.6, 0.1, 0.1])


def test_min_score_leaves_out_the_objects_under_it():
    assert [b.class_name for b in detector(min_score=0.6).predict([sample(0, 10)])[0].objects] == [
        "pedestrian"
    ]
    none = detector(min_score=0.9).predict([sample(0, 10)])[0]
    assert none.objects == [] and none.label == "nothing" and none.position is None
    assert len(detector(min_score=0.0).predict([sample(0, 10)])[0].objects) == 3  # every query


def test_min_score_outside_0_1_is_refused_naming_it():
    with pytest.raises(InputError, match=r"min_score is 1\.5"):
        classifier([0.2] * 5, min_score=1.5)
    assert InferenceConfig().min_score == DEFAULT_MIN_SCORE  # the pipeline's default is the engine's


def test_a_real_detection_model_gives_scored_boxes_batched_as_alone():
    torch.manual_seed(0)
    config = tiny_config(detection={"classes": OBJECT_CLASSES, "num_queries": 4})
    eng = InferenceEngine(build_model(config), model_version="det", device="cpu", min_score=0.0)
    samples = [sample(0, 10), sample(1, 25)]
    for s, pred in zip(samples, eng.predict(samples), strict=True):
        assert len(pred.objects) == 4 and {b.class_name for b in pred.objects} <= set(OBJECT_CLASSES)
        scores = [b.score for b in pred.objects]
        assert scores == sorted(scores, reverse=True)
        alone = eng.predict([s])[0]
        for a, b in zip(pred.objects, alone.objects, strict=True):
            assert a.class_name == b.class_name and a.center == pytest.approx(b.center, abs=1e-4)
