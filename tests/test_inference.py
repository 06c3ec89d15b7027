import numpy as np
import torch

from fusion.inference import InferenceEngine, pick_device
from fusion.model import build_model
from fusion.sample import FusedSample, Modality, Segment
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
