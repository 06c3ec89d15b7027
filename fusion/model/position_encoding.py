"""Fourier position features, exactly as DeepMind's perceiver `position_encoding.py`.

Per axis, grid positions are linspace(-1, 1, n); K frequency bands are
linspace(1, max_resolution / 2, K); the channels are `[pos, sin(pi f pos)..., cos(pi f pos)...]`
with sines and cosines ordered axis-major (all K bands of axis 0, then axis 1, ...),
so d positions give d * (2K + 1) channels.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from fusion.errors import InputError


def num_fourier_channels(pos_dims: int, num_bands: int, *, concat_pos: bool = True) -> int:
    """Width of the Fourier features for `pos_dims`-D positions and `num_bands` bands."""
    return pos_dims * (2 * num_bands + int(concat_pos))


def frequency_bands(
    max_resolution: Sequence[int], num_bands: int, *, device=None, dtype=torch.float32
) -> torch.Tensor:
    """Bands per axis: [d, K], row i = linspace(1, max_resolution[i] / 2, K)."""
    rows = [torch.linspace(1.0, res / 2.0, num_bands, device=device, dtype=dtype) for res in max_resolution]
    return torch.stack(rows, dim=0)


def fourier_features(
    pos: torch.Tensor,
    *,
    num_bands: int,
    max_resolution: Sequence[int],
    concat_pos: bool = True,
) -> torch.Tensor:
    """Fourier features of positions.

    Args:
        pos: [..., d] float positions in [-1, 1].
        num_bands: K, the number of frequency bands per axis.
        max_resolution: d ints; the highest band of axis i is max_resolution[i] / 2.
        concat_pos: prepend the raw positions (the paper does).

    Returns:
        [..., d * (2K + 1)] (or d * 2K without `concat_pos`), channels
        `[pos, sines (axis-major), cosines (axis-major)]`, computed on `pos.device`.
    """
    d = pos.shape[-1]
    if len(max_resolution) != d:
        raise InputError(f"max_resolution has {len(max_resolution)} entries but positions have {d} axes")
    if num_bands < 1:
        raise InputError(f"num_bands must be >= 1, got {num_bands}")
    bands = frequency_bands(max_resolution, num_bands, device=pos.device, dtype=pos.dtype)  # (d, K)
    scaled = (torch.pi * pos.unsqueeze(-1) * bands).flatten(-2)  # (..., d*K)
    parts = [pos] if concat_pos else []
    parts += [torch.sin(scaled), torch.cos(scaled)]
    return torch.cat(parts, dim=-1)


def grid_positions(shape: Sequence[int], *, device=None, dtype=torch.float32) -> torch.Tensor:
    """Positions of a grid, row-major: [prod(shape), len(shape)], each axis linspace(-1, 1)."""
    axes = [torch.linspace(-1.0, 1.0, n, device=device, dtype=dtype) for n in shape]
    mesh = torch.meshgrid(*axes, indexing="ij")
    return torch.stack(mesh, dim=-1).reshape(-1, len(shape))
