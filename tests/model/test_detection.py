import math

import numpy as np
import pytest
import torch

from fusion.config import parse_config
from fusion.errors import ConfigError, InputError
from fusion.model import (
    DetectionOutput,
    ModalityInput,
    ModelConfig,
    build_model,
    preset_config,
    stack_sweeps,
    to_objects,
)
from fusion.model.detection import decode_boxes, encode_boxes
from fusion.model.info import count_flops, count_parameters, example_shapes
from fusion.sample import Modality, Segment
from fusion.sim.objects import CLASS_NAMES
from fusion.sim.world import WorldConfig
from tests.model.conftest import TINY, make_inputs, tiny_config

CLASSES = ["pedestrian", "car", "truck"]
HEAD = {"classes": CLASSES, "num_queries": 6, "layers": 3, "heads": 4}


def det_model(**overrides):
    torch.manual_seed(0)
    return build_model(tiny_config(detection=HEAD, **overrides))


def test_output_shapes_and_aux_layers():
    model = det_model()
    out = model.train()(make_inputs(batch=3)).detections
    assert out is not None
    assert out.logits.shape == (3, 6, len(CLASSES) + 1)
    assert out.boxes.shape == (3, 6, 9) and out.raw.shape == (3, 6, 10)
    assert len(out.aux) == 2 and all(a.logits.shape == out.logits.shape for a in out.aux)
    with torch.no_grad():
        evaluated = model.eval()(make_inputs(batch=3)).detections
    assert evaluated is not None and evaluated.aux == []


def test_without_the_head_the_model_is_unchanged():
    plain = build_model(tiny_config())
    assert plain.detector is None and plain(make_inputs()).detections is None
    names = {n for n, _ in det_model().named_parameters()} - {n for n, _ in plain.named_parameters()}
    assert names and all(n.startswith("detector.") for n in names)


@pytest.mark.parametrize(
    "subset",
    [(Modality.CAMERA,), (Modality.MICROPHONE,), (Modality.LIDAR,), (Modality.CAMERA, Modality.LIDAR)],
)
def test_any_modality_subset_gives_a_full_set(subset):
    model = det_model().eval()
    inputs = make_inputs(batch=2)
    with torch.no_grad():
        out = model({m: inputs[m] for m in subset}).detections
    assert out is not None and out.boxes.shape == (2, 6, 9) and torch.isfinite(out.boxes).all()


def test_padded_batch_equals_each_sample_alone():
    model = det_model().eval()
    counts = [5, 20]
    full = make_inputs(batch=2, points=max(counts))
    lidar = full[Modality.LIDAR]
    mask = torch.arange(max(counts))[None, :] < torch.tensor(counts)[:, None]
    lidar.values[~mask] = 99.0  # garbage the mask must hide
    batched = {
        **full,
        Modality.LIDAR: ModalityInput(values=lidar.values, positions=lidar.positions, mask=mask),
    }
    with torch.no_grad():
        out = model(batched).detections
        for i, n in enumerate(counts):
            alone = {
                Modality.CAMERA: ModalityInput(values=full[Modality.CAMERA].values[i : i + 1], grid=(8, 8)),
                Modality.LIDAR: ModalityInput(
                    values=lidar.values[i : i + 1, :n], positions=lidar.positions[i : i + 1, :n]
                ),
                Modality.MICROPHONE: ModalityInput(
                    values=full[Modality.MICROPHONE].values[i : i + 1], grid=(4, 6)
                ),
            }
            one = model(alone).detections
            assert out is not None and one is not None
            torch.testing.assert_close(out.logits[i : i + 1], one.logits, atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(out.boxes[i : i + 1], one.boxes, atol=1e-4, rtol=1e-5)


def test_gradients_reach_the_queries_and_the_encoder():
    model = det_model().train()
    out = model(make_inputs()).detections
    assert out is not None
    (out.logits.square().mean() + out.raw.square().mean() + sum(a.raw.mean() for a in out.aux)).backward()
    assert model.detector is not None
    for param in (model.detector.queries, model.latents, model.cross[0].q.weight):
        assert param.grad is not None and param.grad.abs().sum() > 0


def test_decoded_sizes_are_positive_and_yaw_in_half_open_range():
    config = tiny_config(detection=HEAD).detection
    assert config is not None
    raw = torch.randn(500, 10) * 20
    raw[0, 6:8] = torch.tensor([-0.0, -1.0])  # atan2 gives -pi here
    raw[1, 6:8] = torch.tensor([0.0, -1.0])
    boxes = decode_boxes(raw, config)
    assert (boxes[:, 3:6] > 0).all() and torch.isfinite(boxes).all()
    assert (boxes[:, 6] > -math.pi).all() and (boxes[:, 6] <= math.pi).all()
    assert boxes[0, 6] == pytest.approx(math.pi) and boxes[1, 6] == pytest.approx(math.pi)


def test_encode_is_the_inverse_of_decode():
    config = tiny_config(detection=HEAD).detection
    assert config is not None
    raw = torch.randn(50, 10, dtype=torch.float64)
    raw[:, 6:8] = torch.nn.functional.normalize(raw[:, 6:8], dim=1)  # (sin, cos) on the circle
    boxes = to_objects(
        DetectionOutput(
            logits=torch.zeros(1, 50, 4), boxes=decode_boxes(raw, config).unsqueeze(0), raw=raw.unsqueeze(0)
        ),
        CLASSES,
        min_score=0.0,
    )[0]
    again = encode_boxes(boxes, config, dtype=torch.float64)
    # to_objects sorts by score; all scores tie, so the order is the query order.
    torch.testing.assert_close(again, raw, rtol=1e-6, atol=1e-6)


def test_to_objects_orders_by_score_and_drops_low_scores():
    logits = torch.zeros(2, 4, 4)
    logits[0, 0, 1] = 1.0  # car, unsure
    logits[0, 1, 0] = 10.0  # pedestrian, sure
    logits[0, 2, 3] = 10.0  # nothing, sure
    logits[0, 3, 2] = 3.0  # truck
    raw = torch.zeros(2, 4, 10)
    raw[..., 7] = 1.0
    config = tiny_config(detection=HEAD).detection
    assert config is not None
    out = DetectionOutput(logits=logits, boxes=decode_boxes(raw, config), raw=raw)
    objects = to_objects(out, CLASSES, min_score=0.3)
    probs = logits.softmax(-1).tolist()
    assert [b.class_name for b in objects[0]] == ["pedestrian", "truck", "car"]
    assert [b.score for b in objects[0]] == pytest.approx([probs[0][1][0], probs[0][3][2], probs[0][0][1]])
    assert all(b.score >= 0.3 for b in objects[0])
    assert objects[1] == []  # all-uniform logits: every class prob 1/4 < 0.3
    assert len(to_objects(out, CLASSES, min_score=0.0)[1]) == 4
    assert [b.score for b in to_objects(out, CLASSES, min_score=0.9)[0]] == pytest.approx([probs[0][1][0]])
    with pytest.raises(InputError, match="2 names"):
        to_objects(out, CLASSES[:2], min_score=0.3)
    with pytest.raises(InputError, match="min_score"):
        to_objects(out, CLASSES, min_score=1.5)


@pytest.mark.parametrize(
    ("head", "key"),
    [
        ({"classes": []}, "detection.classes"),
        ({"classes": ["car", "car"]}, "repeats"),
        ({"classes": ["car", "nothing"]}, "nothing"),
        ({"classes": ["car"], "num_queries": 0}, "detection.num_queries"),
        ({"classes": ["car"], "heads": 3}, "detection.heads"),
        ({"classes": ["car"], "size_ref_m": [1.0, 0.0, 1.0]}, "size_ref_m"),
        ({"classes": ["car"], "layers": 0}, "detection.layers"),
    ],
)
def test_bad_head_configs_are_named(head, key):
    with pytest.raises(ConfigError, match=key):
        parse_config(ModelConfig, {**TINY, "detection": head})


def test_the_detection_preset_reads_twice_and_covers_the_world():
    config = preset_config("sensor-small-det")
    small = preset_config("sensor-small")
    assert small.detection is None
    assert config.detection is not None
    assert config.detection.classes == list(CLASS_NAMES[1:])
    assert config.detection.num_queries >= 2 * WorldConfig().max_objects
    assert config.num_cross_attends >= 2 and config.share_cross_weights
    assert config.inputs == small.inputs
    # FLOPs and parameters count the decoder: the same encoder without it is cheaper.
    bare = config.model_copy(update={"detection": None})
    shapes = example_shapes(config)
    assert count_flops(config, shapes, fast=True) > count_flops(bare, shapes, fast=True)
    assert count_parameters(build_model(config)) > count_parameters(build_model(bare))


def test_stacked_sweeps_carry_their_time():
    rng = np.random.default_rng(0)
    sweeps = [
        Segment(
            values=rng.random((n, 2), dtype=np.float32),
            positions=rng.uniform(-1, 1, (n, 3)).astype(np.float32),
        )
        for n in (5, 3)
    ]
    stacked = stack_sweeps(sweeps, [0.0, 0.1], window_s=0.2)
    assert (
        stacked.values.shape == (8, 2) and stacked.positions is not None and stacked.positions.shape == (8, 4)
    )
    assert np.array_equal(stacked.positions[:5, 3], np.ones(5)) and np.allclose(stacked.positions[5:, 3], 0.0)
    assert np.array_equal(stacked.positions[:5, :3], sweeps[0].positions)
    with pytest.raises(InputError, match="outside the stacking window"):
        stack_sweeps(sweeps, [0.0, 0.3], window_s=0.2)
    with pytest.raises(InputError, match="2 sweeps but 1 ages"):
        stack_sweeps(sweeps, [0.0], window_s=0.2)


def test_a_time_axis_lets_the_model_tell_old_points_from_new():
    lidar = {**TINY["inputs"]["lidar"], "pos_dims": 4, "max_resolution": [16, 16, 8, 4], "time_axis": True}
    torch.manual_seed(0)
    model = build_model(tiny_config(inputs={"lidar": lidar}, min_padding=0, detection=HEAD)).eval()
    g = torch.Generator().manual_seed(2)
    values, space = torch.rand(1, 20, 2, generator=g), torch.rand(1, 20, 3, generator=g) * 2 - 1

    def logits(t: float) -> torch.Tensor:
        positions = torch.cat([space, torch.full((1, 20, 1), t)], dim=-1)
        with torch.no_grad():
            out = model({Modality.LIDAR: ModalityInput(values=values, positions=positions)}).detections
        assert out is not None
        return out.logits  # (the box head starts at the reference box, whatever the input)

    assert (logits(1.0) - logits(-1.0)).abs().max() > 1e-4
    with pytest.raises(ConfigError, match="time_axis"):
        parse_config(
            ModelConfig, {**TINY, "inputs": {"camera": {**TINY["inputs"]["camera"], "time_axis": True}}}
        )
