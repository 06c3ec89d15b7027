"""Which model an inference actor runs: a preset or config, with the shipped or a given checkpoint."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import torch

from fusion.config import load_config
from fusion.errors import ConfigError, InputError
from fusion.model import ModelConfig, Perceiver, build_model, preset_config
from fusion.training.checkpoint import (
    checkpoint_metadata,
    checkpoint_model_config,
    checkpoint_version,
    load_checkpoint,
    preprocess_mismatches,
    shipped_checkpoint,
    trained_preprocess,
)

log = logging.getLogger(__name__)


def resolve_checkpoint(spec: dict[str, Any]) -> str | None:
    """The checkpoint a `ModelSpec` mapping names: its own, else the shipped one of its preset."""
    checkpoint = spec.get("checkpoint")
    preset = spec.get("preset")
    if checkpoint is None and preset is not None:
        shipped = shipped_checkpoint(preset)
        checkpoint = str(shipped) if shipped else None
    return checkpoint


def check_model(spec: dict[str, Any]) -> None:
    """Fail at start, naming the key, on a model the inference actors could not load: an unknown
    preset, a model YAML that is missing or invalid, a checkpoint that is not there or not one."""
    checks: list[tuple[str, Callable[[Any], object]]] = [
        ("preset", preset_config),
        ("config", lambda path: load_config(ModelConfig, path)),
        ("checkpoint", checkpoint_metadata),
    ]
    for key, check in checks:
        if spec.get(key) is None:
            continue
        try:
            check(spec[key])
        except (ValueError, FileNotFoundError) as err:
            raise ConfigError(f"model.{key}: {err}") from None


def check_preprocess(spec: dict[str, Any], rigs: list[tuple[str, dict[str, dict[str, Any]]]]) -> None:
    """Refuse rigs whose preprocessing differs from the one the checkpoint was trained with.

    `rigs` holds (rig id, per-modality preprocess mapping). Raises ValueError naming every
    differing key as `rigs[ID].preprocess.MODALITY.KEY`."""
    checkpoint = resolve_checkpoint(spec)
    if checkpoint is None:
        return
    trained = trained_preprocess(checkpoint)
    if trained is None:  # not written by `fusion train`: nothing to compare against
        return
    problems = [
        f"rigs[{rid}].preprocess.{line}"
        for rid, used in rigs
        for line in preprocess_mismatches(trained, used)
    ]
    if problems:
        raise InputError(
            f"model checkpoint {checkpoint} was trained on differently preprocessed inputs; "
            "set these as in training: " + "; ".join(problems)
        )


def class_names(spec: dict[str, Any]) -> list[str]:
    """The names of the classes the model of a `ModelSpec` mapping predicts (its checkpoint's, else
    its config's; numbers when it names none), read without loading weights."""
    checkpoint = resolve_checkpoint(spec)
    if checkpoint is not None:
        config = checkpoint_model_config(checkpoint)
    elif spec.get("preset") is not None:
        config = preset_config(spec["preset"])
    else:
        config = load_config(ModelConfig, spec["config"])
    return config.class_names or [str(i) for i in range(config.num_classes)]


def load_model(spec: dict[str, Any]) -> tuple[Perceiver, str]:
    """(model, version) for a `ModelSpec` mapping; random weights only with a warning that says so."""
    checkpoint = resolve_checkpoint(spec)
    if checkpoint is not None:
        return load_checkpoint(checkpoint), checkpoint_version(checkpoint)
    preset = spec.get("preset")
    config = preset_config(preset) if preset is not None else load_config(ModelConfig, spec["config"])
    log.warning("model %s: no checkpoint, running RANDOM weights: predictions are meaningless", config.name)
    # Seeded, so every inference actor of a run (and every run) holds the same weights.
    with torch.random.fork_rng():
        torch.manual_seed(0)
        return build_model(config), f"{config.name}@random-init"
