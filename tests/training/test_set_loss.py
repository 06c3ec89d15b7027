import itertools
import math

import numpy as np
import pytest
import torch

from fusion.detection.boxes import Box3D
from fusion.errors import InputError
from fusion.model import build_model
from fusion.model.detection import DetectionHeadConfig, DetectionOutput, decode_boxes, encode_boxes
from fusion.sample import FusedSample
from fusion.training.set_loss import (
    HungarianMatcher,
    SetCriterion,
    SetLossConfig,
    sample_objects,
    set_targets,
)
from tests.model.conftest import make_inputs, tiny_config

CLASSES = ["pedestrian", "car", "truck"]
HEAD = DetectionHeadConfig(classes=CLASSES, num_queries=5, layers=2, heads=2)


def random_boxes(rng: np.random.Generator, n: int) -> list[Box3D]:
    return [
        Box3D(
            class_name=CLASSES[int(rng.integers(len(CLASSES)))],
            center=(rng.uniform(-20, 20), rng.uniform(-20, 20), rng.uniform(-1, 1)),
            size=tuple(rng.uniform(0.5, 5.0, 3)),
            yaw=rng.uniform(-math.pi, math.pi),
            velocity=tuple(rng.uniform(-5, 5, 2)),
        )
        for _ in range(n)
    ]


def random_output(batch: int, queries: int, seed: int, *, aux: int = 0) -> DetectionOutput:
    g = torch.Generator().manual_seed(seed)
    raw = torch.randn(batch, queries, 10, generator=g)
    logits = torch.randn(batch, queries, len(CLASSES) + 1, generator=g)
    return DetectionOutput(
        logits=logits,
        boxes=decode_boxes(raw, HEAD),
        raw=raw,
        aux=[random_output(batch, queries, seed + 1 + k) for k in range(aux)],
    )


def brute_force_cost(cost: np.ndarray) -> float:
    """The least total cost over every injective pairing of the smaller side into the larger."""
    q, n = cost.shape
    if q >= n:
        return min(sum(cost[p[j], j] for j in range(n)) for p in itertools.permutations(range(q), n))
    return min(sum(cost[i, p[i]] for i in range(q)) for p in itertools.permutations(range(n), q))


@pytest.mark.parametrize("seed", range(6))
def test_matcher_finds_the_brute_force_optimum(seed):
    rng = np.random.default_rng(seed)
    config = SetLossConfig(bev_cost=0.3 * (seed % 2))
    matcher = HungarianMatcher(config)
    queries = 4
    objects = [random_boxes(rng, n) for n in (0, 1, 3, 4, 6)]  # 6 > Q: only Q objects can match
    output = random_output(len(objects), queries, seed)
    targets = set_targets(objects, HEAD)
    matches = matcher(output, targets)
    probs = output.logits.softmax(-1)
    for b, (rows, cols) in enumerate(matches):
        n = len(objects[b])
        assert len(rows) == len(cols) == min(queries, n)
        assert len(set(rows)) == len(rows) and len(set(cols)) == len(cols)
        if n == 0:
            continue
        cost = matcher.cost(probs[b], output.raw[b], output.boxes[b], targets[b]).numpy()
        assert cost[rows, cols].sum() == pytest.approx(brute_force_cost(cost), rel=1e-5, abs=1e-5)


def test_cost_is_what_the_config_weights():
    box = random_boxes(np.random.default_rng(3), 1)
    output = random_output(1, 2, seed=5)
    target = set_targets([box], HEAD)[0]
    probs = output.logits.softmax(-1)[0]
    base = HungarianMatcher(SetLossConfig(class_cost=0, box_cost=0)).cost(
        probs, output.raw[0], output.boxes[0], target
    )
    assert torch.count_nonzero(base) == 0
    only_bev = HungarianMatcher(SetLossConfig(class_cost=0, box_cost=0, bev_cost=1.0))
    cost = only_bev.cost(probs, output.raw[0], output.boxes[0], target)
    expected = torch.linalg.norm(output.boxes[0, :, :2] - torch.tensor(box[0].center[:2]), dim=-1)
    torch.testing.assert_close(cost[:, 0], expected, rtol=1e-5, atol=1e-4)


def test_loss_is_invariant_to_query_and_object_order():
    rng = np.random.default_rng(7)
    objects = [random_boxes(rng, 3), random_boxes(rng, 2)]
    output = random_output(2, 5, seed=1, aux=1)
    criterion = SetCriterion(head=HEAD, config=SetLossConfig(bev_cost=0.5))
    before = criterion(output, objects)
    perm = torch.tensor([3, 0, 4, 1, 2])

    def shuffled(out: DetectionOutput) -> DetectionOutput:
        return DetectionOutput(
            logits=out.logits[:, perm],
            boxes=out.boxes[:, perm],
            raw=out.raw[:, perm],
            aux=[shuffled(a) for a in out.aux],
        )

    after = criterion(shuffled(output), [objects[0][::-1], [objects[1][1], objects[1][0]]])
    for key in before:
        torch.testing.assert_close(after[key], before[key], rtol=1e-5, atol=1e-6)
    # Not a loss blind to the boxes: moving one matched box changes it.
    rows, _ = criterion.matcher(output, set_targets(objects, HEAD))[0]
    moved = DetectionOutput(logits=output.logits, boxes=output.boxes, raw=output.raw.clone())
    moved.raw[0, rows[0], 0] += 0.01
    assert float(criterion(moved, objects)["center"]) != pytest.approx(float(before["center"]), abs=1e-4)


def perfect_output(objects: list[list[Box3D]], queries: int) -> DetectionOutput:
    """Queries 0..n-1 of each sample are its objects, exactly; the rest say "nothing", sure."""
    raw = torch.zeros(len(objects), queries, 10)
    logits = torch.full((len(objects), queries, len(CLASSES) + 1), -30.0)
    logits[..., -1] = 30.0
    for b, boxes in enumerate(objects):
        raw[b, : len(boxes)] = encode_boxes(boxes, HEAD)
        for q, box in enumerate(boxes):
            logits[b, q] = -30.0
            logits[b, q, CLASSES.index(box.class_name)] = 30.0
    return DetectionOutput(logits=logits, boxes=decode_boxes(raw, HEAD), raw=raw)


def test_perfect_predictions_have_zero_loss():
    rng = np.random.default_rng(11)
    objects = [random_boxes(rng, 3), random_boxes(rng, 1), []]
    losses = SetCriterion(head=HEAD, config=SetLossConfig()).__call__(perfect_output(objects, 5), objects)
    for term in ("center", "size", "yaw", "velocity"):
        assert float(losses[term]) < 1e-5, term
    assert float(losses["class"]) < 1e-6
    assert float(losses["total"]) < 1e-4
    # Decoding the encoded boxes gives the boxes back (yaw modulo a turn).
    out = perfect_output(objects, 5)
    torch.testing.assert_close(
        out.boxes[0, 0, :6], torch.tensor([*objects[0][0].center, *objects[0][0].size]), rtol=1e-5, atol=1e-4
    )


def test_empty_targets_train_every_query_towards_nothing():
    output = random_output(2, 5, seed=2)
    output.logits.requires_grad_(True)
    output.raw.requires_grad_(True)
    losses = SetCriterion(head=HEAD, config=SetLossConfig()).__call__(output, [[], []])
    for term in ("center", "size", "yaw", "velocity"):
        assert float(losses[term].detach()) == 0.0
    expected = torch.nn.functional.cross_entropy(output.logits.flatten(0, 1), torch.full((10,), len(CLASSES)))
    torch.testing.assert_close(losses["class"], expected)
    losses["total"].backward()
    assert output.logits.grad is not None and output.logits.grad[..., -1].lt(0).all()  # raise p(nothing)
    assert output.raw.grad is not None and torch.count_nonzero(output.raw.grad) == 0


def test_nothing_is_down_weighted():
    rng = np.random.default_rng(4)
    objects = [random_boxes(rng, 1)]
    output = random_output(1, 5, seed=9)
    low = SetCriterion(head=HEAD, config=SetLossConfig(nothing_weight=0.1))(output, objects)["class"]
    full = SetCriterion(head=HEAD, config=SetLossConfig(nothing_weight=1.0))(output, objects)["class"]
    assert float(low) != pytest.approx(float(full))
    zero = SetCriterion(head=HEAD, config=SetLossConfig(nothing_weight=0.0))(output, [[]])["class"]
    assert float(zero) == 0.0  # no 0/0 when every query is "nothing" and it weighs nothing


def test_aux_losses_of_every_earlier_layer_are_added():
    rng = np.random.default_rng(5)
    objects = [random_boxes(rng, 2), random_boxes(rng, 1)]
    output = random_output(2, 5, seed=3, aux=2)
    config = SetLossConfig(aux_weight=0.5)
    criterion = SetCriterion(head=HEAD, config=config)
    losses = criterion(output, objects)
    targets = set_targets(objects, HEAD)
    layers = [criterion.layer_loss(a, targets)["total"] for a in output.aux]
    last = criterion.layer_loss(output, targets)["total"]
    torch.testing.assert_close(losses["aux"], layers[0] + layers[1])
    torch.testing.assert_close(losses["total"], last + 0.5 * (layers[0] + layers[1]))
    assert float(losses["aux"]) > 0


def test_samples_without_object_lists_are_named():
    samples = [
        FusedSample(seq=i, timestamp=0.0, segments={}, objects=objects)
        for i, objects in enumerate([[], None])
    ]
    with pytest.raises(InputError, match=r"\[1\]"):
        sample_objects(samples)
    assert sample_objects(samples[:1]) == [[]]


def test_unknown_class_is_named():
    box = Box3D(class_name="tram", center=(1, 2, 0), size=(10, 2, 3), yaw=0.0)
    with pytest.raises(InputError, match="tram"):
        set_targets([[box]], HEAD)


@pytest.fixture
def one_thread():
    """Tensors this small gain nothing from intra-op threads, and on a busy machine the thread
    pool's waits make the steps many times slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_a_few_steps_overfit_four_fixed_samples(one_thread):
    """The whole path (model, decoder, matcher, loss) learns: 4 fixed samples, the set loss falls."""
    torch.manual_seed(0)
    head = {"classes": CLASSES, "num_queries": 6, "layers": 2, "heads": 4}
    model = build_model(tiny_config(num_cross_attends=2, self_attends_per_block=1, detection=head)).train()
    criterion = SetCriterion(head=model.config.detection, config=SetLossConfig())
    rng = np.random.default_rng(0)
    objects = [random_boxes(rng, n) for n in (0, 1, 2, 3)]
    inputs = make_inputs(batch=4, points=24, seed=1)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    history = []
    for _ in range(150):
        out = model(inputs)
        assert out.detections is not None and len(out.detections.aux) == 1
        loss = criterion(out.detections, objects)["total"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        history.append(float(loss.detach()))
    # From about 26 to about 1 (a few seconds on one CPU core).
    assert np.mean(history[-5:]) < 0.2 * np.mean(history[:5]), history[::10]
