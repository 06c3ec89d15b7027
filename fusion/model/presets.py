"""Building models from configs and from the shipped presets in configs/model/."""

from __future__ import annotations

from pathlib import Path

from fusion.config import load_config
from fusion.model.config import ModelConfig
from fusion.model.perceiver import Perceiver

_PACKAGE = Path(__file__).resolve().parent.parent
# A wheel carries configs/ as fusion/_configs; a source checkout has it at the repo root.
_PRESET_DIRS = (_PACKAGE / "_configs" / "model", _PACKAGE.parent / "configs" / "model")


def preset_dir() -> Path:
    """The folder holding the shipped model presets."""
    for d in _PRESET_DIRS:
        if d.is_dir():
            return d
    raise FileNotFoundError(f"no model presets found in any of {[str(d) for d in _PRESET_DIRS]}")


def preset_names() -> list[str]:
    return sorted(p.stem for p in preset_dir().glob("*.yaml"))


def preset_config(name: str) -> ModelConfig:
    """The ModelConfig of a shipped preset (`paper-imagenet`, `sensor-small`, ...)."""
    path = preset_dir() / f"{name}.yaml"
    if not path.is_file():
        raise ValueError(f"unknown model preset {name!r} (known: {', '.join(preset_names())})")
    return load_config(ModelConfig, path)


def build_model(config: ModelConfig) -> Perceiver:
    """A freshly initialized Perceiver for `config`."""
    return Perceiver(config)


def load_preset(name: str) -> Perceiver:
    """A freshly initialized Perceiver of a shipped preset."""
    return build_model(preset_config(name))
