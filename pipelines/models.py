"""Which model an inference actor runs: a preset or config, with the shipped or a given checkpoint."""

from __future__ import annotations

import logging
from typing import Any

import torch

from fusion.checkpoint import checkpoint_version, load_checkpoint, shipped_checkpoint
from fusion.config import load_config
from fusion.model import ModelConfig, Perceiver, build_model, preset_config

log = logging.getLogger(__name__)


def load_model(spec: dict[str, Any]) -> tuple[Perceiver, str]:
    """(model, version) for a `ModelSpec` mapping; random weights only with a warning that says so."""
    checkpoint = spec.get("checkpoint")
    preset = spec.get("preset")
    if checkpoint is None and preset is not None:
        shipped = shipped_checkpoint(preset)
        checkpoint = str(shipped) if shipped else None
    if checkpoint is not None:
        return load_checkpoint(checkpoint), checkpoint_version(checkpoint)
    config = preset_config(preset) if preset is not None else load_config(ModelConfig, spec["config"])
    log.warning("model %s: no checkpoint, running RANDOM weights: predictions are meaningless", config.name)
    # Seeded, so every inference actor of a run (and every run) holds the same weights.
    with torch.random.fork_rng():
        torch.manual_seed(0)
        return build_model(config), f"{config.name}@random-init"
