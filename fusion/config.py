"""Typed configuration loaded from YAML.

Every component has its own pydantic model derived from `StrictModel`: unknown keys and
wrong types are rejected when the file is loaded, and the error names the file and the
dotted key path (`inputs.camera.num_bands: Input should be a valid integer`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Strict, ValidationError

from fusion.sample import Modality

# YAML gives strings for enum members; everything else must already have the right type.
ModalityKey = Annotated[Modality, Strict(False)]


class ConfigError(ValueError):
    """A configuration file or mapping that cannot be used; the message names key and file."""


class StartError(RuntimeError):
    """A command could not start (port taken, actor could not open its device); the message says why."""


class StrictModel(BaseModel):
    """Base for all configs: no unknown keys, no silent type coercion, immutable."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


C = TypeVar("C", bound=StrictModel)


def _format_errors(err: ValidationError, source: str) -> str:
    lines = []
    for e in err.errors():
        path = ".".join(str(p) for p in e["loc"] if p != "[key]") or "<root>"
        got = e.get("input")
        shown = "" if isinstance(got, dict | list) else f" (got {got!r})"
        lines.append(f"{source}: {path}: {e['msg']}{shown}")
    return "\n".join(lines)


def parse_config(cls: type[C], data: Any, *, source: str = "<config>") -> C:
    """Validate a mapping against `cls`; raise ConfigError naming every bad key."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping at the top level, got {type(data).__name__}")
    try:
        return cls.model_validate(data)
    except ValidationError as err:
        raise ConfigError(_format_errors(err, source)) from None


def load_config(cls: type[C], path: str | Path) -> C:
    """Load and validate a YAML file; a missing or unparsable file fails naming the path."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from None
    return parse_config(cls, data, source=str(path))
