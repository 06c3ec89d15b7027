"""Data that flows between sensors and the model.

A `Segment` is one modality's preprocessed reading: `values` [M, c] and either explicit
`positions` [M, d] in [-1, 1] (LiDAR: they change every sweep) or a `grid` shape whose
positions are implicit and identical every time (image H x W, spectrogram T x F).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum

import numpy as np


class Modality(StrEnum):
    """The sensor kinds the pipeline fuses. Iteration order everywhere is `MODALITY_ORDER`."""

    CAMERA = "camera"
    LIDAR = "lidar"
    MICROPHONE = "microphone"


# Fixed order in which modalities are concatenated into the byte array (sorted by name,
# as DeepMind's multimodal preprocessor does), so a model never depends on dict order.
MODALITY_ORDER: tuple[Modality, ...] = tuple(sorted(Modality, key=lambda m: m.value))


def parse_modality(name: str | Modality) -> Modality:
    """Return the `Modality` for `name`, or raise a ValueError listing the known ones."""
    if isinstance(name, Modality):
        return name
    try:
        return Modality(name)
    except ValueError:
        known = ", ".join(m.value for m in MODALITY_ORDER)
        raise ValueError(f"unknown modality {name!r} (known: {known})") from None


@dataclass(frozen=True)
class Segment:
    """One modality of one fused sample, ready for the model.

    Attributes:
        values: [M, c] float32 values per row (pixel, spectrogram cell, point).
        positions: [M, d] float32 in [-1, 1], or None when `grid` is given.
        grid: the implicit grid shape (d ints whose product is M), or None for explicit positions.
    """

    values: np.ndarray
    positions: np.ndarray | None = None
    grid: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        if (self.positions is None) == (self.grid is None):
            raise ValueError("a Segment needs exactly one of `positions` or `grid`")
        if self.values.ndim != 2:
            raise ValueError(f"Segment values must be [M, c], got shape {self.values.shape}")
        rows = self.values.shape[0]
        if self.grid is not None and math.prod(self.grid) != rows:
            raise ValueError(f"grid {self.grid} has {math.prod(self.grid)} cells but values have {rows} rows")
        if self.positions is not None and (self.positions.ndim != 2 or self.positions.shape[0] != rows):
            raise ValueError(
                f"Segment positions must be [{rows}, d] to match values, got {self.positions.shape}"
            )

    @property
    def num_rows(self) -> int:
        return int(self.values.shape[0])
