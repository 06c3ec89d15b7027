"""Building models from configs and from the shipped presets in configs/model/."""

from __future__ import annotations

from pathlib import Path

from fusion.config import load_config, shipped_config_dir, shipped_config_names
from fusion.errors import InputError
from fusion.model.config import ModelConfig
from fusion.model.perceiver import Perceiver


def preset_dir() -> Path:
    """The folder holding the shipped model presets."""
    return shipped_config_dir("model")


def preset_names() -> list[str]:
    return shipped_config_names("model")


def preset_config(name: str) -> ModelConfig:
    """The ModelConfig of a shipped preset (`paper-imagenet`, `sensor-small`, ...)."""
    path = preset_dir() / f"{name}.yaml"
    if not path.is_file():
        raise InputError(f"unknown model preset {name!r} (known: {', '.join(preset_names())})")
    return load_config(ModelConfig, path)


def build_model(config: ModelConfig) -> Perceiver:
    """A freshly initialized Perceiver for `config`."""
    return Perceiver(config)


def load_preset(name: str) -> Perceiver:
    """A freshly initialized Perceiver of a shipped preset."""
    return build_model(preset_config(name))
