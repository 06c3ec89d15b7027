import numpy as np
import pytest
import torch

from fusion.model import fourier_features, grid_positions
from fusion.model.position_encoding import num_fourier_channels


def numpy_fourier(pos: np.ndarray, num_bands: int, max_resolution) -> np.ndarray:
    """Independent reference, written from the formula, one axis and one band at a time."""
    d = pos.shape[1]
    sines, cosines = [], []
    for axis in range(d):
        freqs = np.linspace(1.0, max_resolution[axis] / 2.0, num_bands)
        for f in freqs:
            sines.append(np.sin(np.pi * f * pos[:, axis]))
            cosines.append(np.cos(np.pi * f * pos[:, axis]))
    return np.concatenate([pos, np.stack(sines, 1), np.stack(cosines, 1)], axis=1)


@pytest.mark.parametrize(("d", "bands", "res"), [(1, 1, [2]), (2, 7, [10, 20]), (3, 5, [64, 64, 16])])
def test_fourier_features_match_numpy_reference(d, bands, res):
    pos = np.random.default_rng(d).uniform(-1, 1, size=(50, d))
    got = fourier_features(torch.tensor(pos, dtype=torch.float64), num_bands=bands, max_resolution=res)
    want = numpy_fourier(pos, bands, res)
    assert got.shape == (50, d * (2 * bands + 1)) == want.shape
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-12, atol=1e-12)


def test_fourier_features_keep_leading_batch_dims_and_width():
    pos = torch.rand(2, 3, 7, 2) * 2 - 1
    out = fourier_features(pos, num_bands=6, max_resolution=[16, 16])
    assert out.shape == (2, 3, 7, num_fourier_channels(2, 6))
    torch.testing.assert_close(out[..., :2], pos)  # raw positions first, as in the reference
    no_pos = fourier_features(pos, num_bands=6, max_resolution=[16, 16], concat_pos=False)
    torch.testing.assert_close(no_pos, out[..., 2:])


def test_grid_positions_are_row_major_linspace():
    pos = grid_positions((3, 4))
    ys, xs = np.meshgrid(np.linspace(-1, 1, 3), np.linspace(-1, 1, 4), indexing="ij")
    np.testing.assert_allclose(pos.numpy(), np.stack([ys, xs], -1).reshape(-1, 2), atol=1e-7)


def test_fourier_features_reject_mismatched_resolution():
    with pytest.raises(ValueError, match="max_resolution has 1 entries but positions have 2 axes"):
        fourier_features(torch.zeros(4, 2), num_bands=3, max_resolution=[8])
