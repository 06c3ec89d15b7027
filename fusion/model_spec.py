"""Which model a run uses: `ModelSpec` (the config's `model:` section), resolved once on the
driver into a `ResolvedModel` that every inference actor receives and loads (`load_model`).

Resolving finds the checkpoint (the spec's own, else the shipped one of its preset), reads its
header once (model config, how it was trained) and hashes it once (the model version), so
start-up checks, the output sink's class names and the actors all use the same answer. This
module loads neither torch nor safetensors until a function needs them: a config that names a
model validates without them.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import field_validator, model_validator

from fusion.config import StrictModel, load_config, shipped_config_names
from fusion.errors import ConfigError, InputError

if TYPE_CHECKING:
    from fusion.model import ModelConfig, Perceiver

log = logging.getLogger(__name__)


class ModelSpec(StrictModel):
    preset: str | None = "sensor-small"  # a configs/model preset, or
    config: str | None = None  # a model YAML path
    checkpoint: str | None = None  # safetensors path; None: the shipped one for the preset, if any

    @model_validator(mode="after")
    def _one_source(self) -> ModelSpec:
        if (self.preset is None) == (self.config is None):
            raise InputError("give exactly one of model.preset or model.config")
        return self

    @field_validator("preset")
    @classmethod
    def _known_preset(cls, name: str | None) -> str | None:
        known = shipped_config_names("model")
        if name is not None and name not in known:
            raise InputError(f"unknown model preset {name!r} (known: {', '.join(known)})")
        return name

    @field_validator("config", "checkpoint")
    @classmethod
    def _file_exists(cls, path: str | None) -> str | None:
        if path is None:
            return None
        if not Path(path).is_file():
            raise InputError(f"no such file: {path}")
        return str(Path(path).resolve())  # inference actors may run where the cwd differs


@dataclass(frozen=True)
class ResolvedModel:
    """A `ModelSpec` resolved: what inference loads and what the run reports.

    Attributes:
        config: the model's architecture (from the checkpoint when there is one).
        checkpoint: the safetensors file, or None (random weights, with a warning).
        version: `<file stem>@<sha256 prefix>`, or `<name>@random-init`.
        trained_preprocess: per modality, the preprocessing the weights were trained with
            (None: not recorded, or no checkpoint).
    """

    config: ModelConfig
    checkpoint: Path | None
    version: str
    trained_preprocess: dict[str, dict[str, Any]] | None = None

    @property
    def class_names(self) -> list[str]:
        """The names of the predicted classes (numbers when the config names none)."""
        return self.config.class_names or [str(i) for i in range(self.config.num_classes)]


def resolve_model(spec: ModelSpec) -> ResolvedModel:
    """Resolve `spec` once; a preset, model YAML or checkpoint that cannot be used fails here as
    a ConfigError naming its key (`model.preset`, `model.config`, `model.checkpoint`)."""
    from fusion.model import ModelConfig, preset_config
    from fusion.training.checkpoint import (
        checkpoint_metadata,
        checkpoint_version,
        metadata_model_config,
        metadata_preprocess,
        shipped_checkpoint,
    )

    try:
        config = preset_config(spec.preset) if spec.preset is not None else None
    except InputError as err:
        raise ConfigError(f"model.preset: {err}") from None
    if spec.config is not None:
        try:
            config = load_config(ModelConfig, spec.config)
        except (InputError, FileNotFoundError) as err:
            raise ConfigError(f"model.config: {err}") from None
    assert config is not None  # ModelSpec holds exactly one of preset and config
    path = Path(spec.checkpoint) if spec.checkpoint is not None else None
    if path is None and spec.preset is not None:
        path = shipped_checkpoint(spec.preset)
    if path is None:
        return ResolvedModel(config=config, checkpoint=None, version=f"{config.name}@random-init")
    try:
        metadata = checkpoint_metadata(path)
        return ResolvedModel(
            config=metadata_model_config(metadata, source=str(path)),
            checkpoint=path,
            version=checkpoint_version(path),
            trained_preprocess=metadata_preprocess(metadata, source=str(path)),
        )
    except InputError as err:
        raise ConfigError(f"model.checkpoint: {err}") from None


def check_preprocess(model: ResolvedModel, rigs: list[tuple[str, dict[str, dict[str, Any]]]]) -> None:
    """Refuse rigs whose preprocessing differs from the one the checkpoint was trained with.

    Args:
        model: the resolved model (nothing is checked when its training is not recorded).
        rigs: (rig id, per-modality preprocess mapping) for every rig.

    Raises:
        InputError: naming every differing key as `rigs[ID].preprocess.MODALITY.KEY`.
    """
    from fusion.training.checkpoint import preprocess_mismatches

    if model.trained_preprocess is None:
        return
    problems = [
        f"rigs[{rid}].preprocess.{line}"
        for rid, used in rigs
        for line in preprocess_mismatches(model.trained_preprocess, used)
    ]
    if problems:
        raise InputError(
            f"model checkpoint {model.checkpoint} was trained on differently preprocessed inputs; "
            "set these as in training: " + "; ".join(problems)
        )


def load_model(model: ResolvedModel) -> Perceiver:
    """The network of a resolved model: its checkpoint's weights, or seeded random weights (the
    same in every actor of a run, and every run) with a warning that says so."""
    import torch

    from fusion.model import build_model
    from fusion.training.checkpoint import load_checkpoint

    if model.checkpoint is not None:
        return load_checkpoint(model.checkpoint)
    log.warning(
        "model %s: no checkpoint, running RANDOM weights: predictions are meaningless", model.config.name
    )
    with torch.random.fork_rng():
        torch.manual_seed(0)
        return build_model(model.config)
