import numpy as np
import pytest
import torch

from fusion.model import build_model, collate
from fusion.sample import Modality, Segment
from tests.model.conftest import tiny_config


def _segments(points: int, seed: int, *, camera_grid=(8, 8), with_mic: bool = True):
    rng = np.random.default_rng(seed)
    sample = {
        Modality.CAMERA: Segment(
            values=rng.random((int(np.prod(camera_grid)), 3), dtype=np.float32), grid=camera_grid
        ),
        Modality.LIDAR: Segment(
            values=rng.random((points, 2), dtype=np.float32),
            positions=rng.uniform(-1, 1, (points, 3)).astype(np.float32),
        ),
    }
    if with_mic:
        sample[Modality.MICROPHONE] = Segment(
            values=rng.standard_normal((24, 1), dtype=np.float32), grid=(4, 6)
        )
    return sample


def _logits(model, batch):
    with torch.no_grad():
        return model(batch).logits


def test_collate_pads_rows_and_masks_missing_modalities():
    samples = [_segments(5, 0), _segments(9, 1, with_mic=False)]
    batch = collate(samples)
    lidar, mic, cam = batch[Modality.LIDAR], batch[Modality.MICROPHONE], batch[Modality.CAMERA]
    assert lidar.values.shape == (2, 9, 2) and lidar.mask.tolist()[0] == [True] * 5 + [False] * 4
    assert mic.mask.tolist() == [[True] * 24, [False] * 24]
    assert cam.grid == (8, 8) and cam.mask is None
    assert list(batch) == [Modality.CAMERA, Modality.LIDAR, Modality.MICROPHONE]


def test_collated_batch_gives_each_sample_its_own_output():
    torch.manual_seed(0)
    model = build_model(tiny_config()).eval()
    samples = [_segments(5, 0), _segments(9, 1, with_mic=False), _segments(30, 2)]
    batched = _logits(model, collate(samples))
    for i, s in enumerate(samples):
        torch.testing.assert_close(batched[i : i + 1], _logits(model, collate([s])), atol=1e-5, rtol=1e-5)


def test_mixed_grids_fall_back_to_explicit_positions():
    torch.manual_seed(0)
    model = build_model(tiny_config()).eval()
    samples = [_segments(5, 0), _segments(5, 1, camera_grid=(4, 16))]
    batch = collate(samples)
    assert batch[Modality.CAMERA].grid is None and batch[Modality.CAMERA].positions.shape == (2, 64, 2)
    batched = _logits(model, batch)
    for i, s in enumerate(samples):
        torch.testing.assert_close(batched[i : i + 1], _logits(model, collate([s])), atol=1e-5, rtol=1e-5)


def _kept_in_training(model, batch) -> torch.Tensor:
    """[B, 3] which of camera, LiDAR, microphone each sample kept under training-time dropout;
    asserts that a modality is dropped whole, never in part."""
    model.train()
    mask = model.adapter(batch).mask
    assert mask is not None
    spans = (slice(0, 64), slice(64, 70), slice(70, 94))  # camera, lidar, microphone rows
    for s in spans:
        assert torch.equal(mask[:, s].all(1), mask[:, s].any(1))
    return torch.stack([mask[:, s].any(1) for s in spans], 1)


def test_modality_dropout_only_in_training_and_never_drops_everything():
    torch.manual_seed(0)
    model = build_model(tiny_config(modality_dropout=0.7))
    batch = collate([_segments(6, i) for i in range(64)])
    present = _kept_in_training(model, batch)
    assert present.any(1).all()  # every sample keeps at least one modality
    assert 0.15 < 1 - present.float().mean() < 0.75  # a good share is dropped
    model.eval()
    assert model.adapter(batch).mask is None


def test_segment_rejects_inconsistent_shapes():
    with pytest.raises(ValueError, match="grid"):
        Segment(values=np.zeros((10, 3), np.float32), grid=(3, 3))
    with pytest.raises(ValueError, match="exactly one"):
        Segment(values=np.zeros((9, 3), np.float32))
    with pytest.raises(ValueError, match="positions must be"):
        Segment(values=np.zeros((9, 3), np.float32), positions=np.zeros((8, 3), np.float32))


def test_subset_schedule_trains_every_proper_subset_alike():
    torch.manual_seed(0)
    model = build_model(tiny_config(modality_dropout=0.75, modality_dropout_schedule="subsets"))
    present = _kept_in_training(model, collate([_segments(6, i) for i in range(2000)]))
    codes = (present.long() * torch.tensor([1, 2, 4])).sum(1)
    share = torch.bincount(codes, minlength=8).float() / len(codes)
    assert share[0] == 0  # never nothing
    assert abs(share[7] - 0.25) < 0.04  # all three kept in 1 - p
    for code in range(1, 7):  # each single sensor and each pair: p / 6
        assert abs(share[code] - 0.125) < 0.03, (code, share.tolist())
