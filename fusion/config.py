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

from fusion.errors import ConfigError, MissingFileError
from fusion.sample import Modality

# YAML gives strings for enum members; everything else must already have the right type.
ModalityKey = Annotated[Modality, Strict(False)]


_PACKAGE = Path(__file__).resolve().parent
# A wheel carries configs/ as fusion/_configs; a source checkout has it at the repo root.
_SHIPPED_DIRS = (_PACKAGE / "_configs", _PACKAGE.parent / "configs")


def shipped_config_dir(kind: str) -> Path:
    """The folder of the shipped `kind` configs (`model`, `pipeline`, `train`)."""
    for d in _SHIPPED_DIRS:
        if (d / kind).is_dir():
            return d / kind
    raise MissingFileError(f"no shipped {kind} configs in any of {[str(d / kind) for d in _SHIPPED_DIRS]}")


def shipped_config_names(kind: str) -> list[str]:
    return sorted(p.stem for p in shipped_config_dir(kind).glob("*.yaml"))


class StrictModel(BaseModel):
    """Base for all configs: no unknown keys, no silent type coercion, immutable."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


C = TypeVar("C", bound=StrictModel)


def key_path(loc: tuple[int | str, ...], data: Any = None) -> str:
    """A key path as users write it: `rigs[0].sync.slop_s`; a list item with a string `id` is
    named by it (`rigs[front].sync`)."""
    path = ""
    for part in loc:
        if part == "[key]":
            continue
        if isinstance(part, int):
            item = data[part] if isinstance(data, list) and 0 <= part < len(data) else None
            name = item.get("id") if isinstance(item, dict) else None
            path += f"[{name}]" if isinstance(name, str) else f"[{part}]"
            data = item
        else:
            path += f".{part}" if path else part
            data = data.get(part) if isinstance(data, dict) else None
    return path or "<root>"


def _format_errors(err: ValidationError, source: str, data: Any = None) -> str:
    lines = []
    for e in err.errors():
        got = e.get("input")
        shown = "" if isinstance(got, dict | list) else f" (got {got!r})"
        message = e["msg"].removeprefix("Value error, ")
        lines.append(f"{source}: {key_path(e['loc'], data)}: {message}{shown}")
    return "\n".join(lines)


def parse_config(cls: type[C], data: Any, *, source: str = "<config>") -> C:
    """Validate a mapping against `cls`; raise ConfigError naming every bad key."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping at the top level, got {type(data).__name__}")
    try:
        return cls.model_validate(data)
    except ValidationError as err:
        raise ConfigError(_format_errors(err, source, data)) from None


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
