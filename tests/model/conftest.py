"""Small model configs shared by the model tests."""

from __future__ import annotations

import pytest
import torch

from fusion.model import ModalityInput, ModelConfig
from fusion.sample import Modality

TINY = {
    "name": "tiny",
    "inputs": {
        "camera": {
            "kind": "grid",
            "channels": 3,
            "pos_dims": 2,
            "num_bands": 4,
            "max_resolution": [8, 8],
            "example_shape": [8, 8],
        },
        "microphone": {
            "kind": "grid",
            "channels": 1,
            "pos_dims": 2,
            "num_bands": 3,
            "max_resolution": [4, 6],
            "example_shape": [4, 6],
        },
        "lidar": {
            "kind": "points",
            "channels": 2,
            "pos_dims": 3,
            "num_bands": 3,
            "max_resolution": [16, 16, 8],
            "example_shape": [32],
        },
    },
    "num_latents": 8,
    "latent_dim": 32,
    "num_cross_attends": 3,
    "self_attends_per_block": 2,
    "cross_heads": 1,
    "self_heads": 4,
    "num_classes": 5,
    "position_dims": 3,
}


def tiny_config(**overrides) -> ModelConfig:
    return ModelConfig.model_validate({**TINY, **overrides})


@pytest.fixture
def config() -> ModelConfig:
    return tiny_config()


def make_inputs(batch: int = 2, points: int = 20, seed: int = 0) -> dict[Modality, ModalityInput]:
    g = torch.Generator().manual_seed(seed)
    return {
        Modality.CAMERA: ModalityInput(values=torch.rand(batch, 64, 3, generator=g), grid=(8, 8)),
        Modality.MICROPHONE: ModalityInput(values=torch.randn(batch, 24, 1, generator=g), grid=(4, 6)),
        Modality.LIDAR: ModalityInput(
            values=torch.rand(batch, points, 2, generator=g),
            positions=torch.rand(batch, points, 3, generator=g) * 2 - 1,
        ),
    }
