"""The preprocessing contract: one Frame in, one model-ready Segment out.

Each modality has one preprocessor class with a config, registered with
`fusion.sensors.registry.register_preprocessor` and built by `make_preprocessor`. They are pure
functions of the frame (and of a seed, for LiDAR sampling), vectorized with no Python loop over
pixels, samples or points, and raise ValueError naming the sensor when a frame cannot be used.
"""

from __future__ import annotations

from typing import Protocol

from fusion.sample import Frame, Modality, Segment


class Preprocessor(Protocol):
    modality: Modality

    def __call__(self, frame: Frame) -> Segment:
        """Turn one frame (for audio: the window the synchronizer cut) into a Segment."""
        ...
