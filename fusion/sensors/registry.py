"""One registry for what the sensors package offers by name: sources, file probes, preprocessors.

- Sources, keyed by (modality, backend), each with its config class: a config picks and
  validates its backend through `make_source` / `source_config_class`, no if/elif dispatch.
- File probes: what `fusion inspect` says about a file or folder (`probe_file`).
- Preprocessors, keyed by modality, each with its config class (`make_preprocessor`).

Backends register themselves when their module is imported (`@register_source`,
`@register_probe`, `@register_preprocessor`). This module imports none of them: the built-in
modules are listed below and imported on the first lookup of their kind. Backend modules
import the registry, never the other way round at import time, so there is no import cycle,
and a process that only preprocesses never loads a device or file library.
"""

from __future__ import annotations

import functools
import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeVar, cast

from fusion.config import StrictModel, parse_config
from fusion.errors import InputError, MissingFileError
from fusion.sample import Modality, parse_modality
from fusion.sensors.preprocess_config import Preprocessor
from fusion.sensors.source import Source, SourceConfig

# The built-in backends, by what they register. File probes live beside the sources that read
# the same files, so both come from the source modules.
SOURCE_MODULES = (
    "fusion.sensors.opencv",
    "fusion.sensors.audio",
    "fusion.sensors.pointclouds",
    "fusion.sensors.velodyne.source",
    "fusion.sensors.ros.source",
    "fusion.sensors.simulated",
    "fusion.recording.source",
)
PREPROCESSOR_MODULES = ("fusion.sensors.preprocessors",)


@functools.cache
def _load(modules: tuple[str, ...]) -> None:
    """Import built-in backend modules once, so their decorators run."""
    for name in modules:
        importlib.import_module(name)


# --- sources -------------------------------------------------------------------------------

S = TypeVar("S", bound=type[Source])
_SOURCES: dict[tuple[Modality, str], type[Source]] = {}


def register_source(cls: S) -> S:
    """Class decorator: make a Source backend available to configs by (modality, backend)."""
    key = (cls.modality, cls.backend)
    if key in _SOURCES and _SOURCES[key] is not cls:
        raise RuntimeError(f"source backend {cls.modality.value}/{cls.backend} registered twice")
    _SOURCES[key] = cls
    return cls


def backends(modality: Modality) -> list[str]:
    """The backend names a `modality` source config may ask for, sorted."""
    _load(SOURCE_MODULES)
    return sorted(b for m, b in _SOURCES if m is modality)


def source_class(modality: Modality, backend: object) -> type[Source]:
    """The Source class of a (modality, backend); ValueError naming the known backends."""
    _load(SOURCE_MODULES)
    cls = _SOURCES.get((modality, str(backend)))
    if cls is None:
        known = ", ".join(backends(modality))
        raise InputError(f"unknown {modality.value} backend {backend!r} (known: {known})")
    return cls


def source_config_class(modality: Modality | str, backend: str) -> type[SourceConfig]:
    """The config class of a (modality, backend); ValueError naming the known backends."""
    return source_class(parse_modality(modality), backend).config_cls


def make_source(
    modality: Modality | str, config: Mapping[str, Any] | SourceConfig, *, source: str = "sensor"
) -> Source:
    """Build the source a config asks for: a mapping is validated here (unknown backends and bad
    keys fail naming `source`); a SourceConfig must be the backend's own config class."""
    modality = parse_modality(modality)
    backend = config.backend if isinstance(config, SourceConfig) else config.get("backend")
    try:
        cls = source_class(modality, backend)
    except ValueError as err:
        raise InputError(f"{source}.backend: {err}") from None
    if isinstance(config, SourceConfig):
        if not isinstance(config, cls.config_cls):
            raise InputError(
                f"{source}: a {type(config).__name__} is not a {modality.value}/{backend} config "
                f"(expected {cls.config_cls.__name__})"
            )
        return cls(config)
    return cls(parse_config(cls.config_cls, dict(config), source=source))


# --- file probes ---------------------------------------------------------------------------


@dataclass
class FileReport:
    """What `fusion inspect` prints about one file or folder."""

    path: str
    modality: Modality
    backend: str
    frames: int  # video frames, LiDAR sweeps, audio samples, or recorded frames
    start: float  # first timestamp, seconds
    end: float  # last timestamp, seconds
    shapes: str  # e.g. "480x640x3 uint8", "16000 Hz mono", "N x 4 float32"
    details: dict[str, Any] = field(default_factory=dict)  # point count, bounds, codec, ...

    @property
    def rate(self) -> float:
        """Frames per second over the span (0 for a single frame)."""
        span = self.end - self.start
        return (self.frames - 1) / span if self.frames > 1 and span > 0 else 0.0


Probe = Callable[[Path], FileReport]
_PROBES: list[tuple[Callable[[Path], bool], Probe]] = []


def register_probe(matches: Callable[[Path], bool]) -> Callable[[Probe], Probe]:
    """Decorator: `probe(path) -> FileReport` for the paths `matches` accepts.

    A probe raises ValueError (or OSError) with what is wrong when the file is unreadable.
    """

    def deco(fn: Probe) -> Probe:
        _PROBES.append((matches, fn))
        return fn

    return deco


def probe_file(path: str | Path) -> FileReport:
    """Describe a supported file; ValueError naming the file when none can read it."""
    _load(SOURCE_MODULES)
    path = Path(path)
    if not path.exists():
        raise MissingFileError(f"{path}: no such file or directory")
    for matches, fn in _PROBES:
        if matches(path):
            return fn(path)
    raise InputError(
        f"{path}: not a supported video, audio, point cloud, KITTI folder, pcap, ROS bag, MCAP or recording"
    )


# --- preprocessors -------------------------------------------------------------------------


class PreprocessorClass(Protocol):
    """A preprocessor class: its modality, its config class, and a constructor taking one."""

    @property
    def modality(self) -> Modality: ...
    @property
    def config_cls(self) -> type[StrictModel]: ...  # read-only: each class narrows it to its own
    def __call__(self, config: Any, /) -> Preprocessor: ...


P = TypeVar("P", bound=PreprocessorClass)
_PREPROCESSORS: dict[Modality, PreprocessorClass] = {}


def register_preprocessor(cls: P) -> P:
    """Class decorator: make `cls` the preprocessor of its modality."""
    if cls.modality in _PREPROCESSORS and _PREPROCESSORS[cls.modality] is not cls:
        raise RuntimeError(f"{cls.modality.value} preprocessor registered twice")
    _PREPROCESSORS[cls.modality] = cls
    return cls


def _preprocessor_class(modality: Modality) -> PreprocessorClass:
    _load(PREPROCESSOR_MODULES)
    return _PREPROCESSORS[modality]


def make_preprocessor(
    modality: Modality, config: Mapping[str, Any] | StrictModel, *, source: str = "preprocess"
) -> Preprocessor:
    """The modality's preprocessor built from its config, or a mapping validated here (errors name `source`)."""
    cls = _preprocessor_class(modality)
    if isinstance(config, StrictModel):
        if not isinstance(config, cls.config_cls):
            raise InputError(f"{source}: a {type(config).__name__} is not a {cls.config_cls.__name__}")
        return cls(config)
    return cls(parse_config(cls.config_cls, dict(config), source=source))


def preprocess_settings(
    modality: Modality, config: Mapping[str, Any], *, source: str = "preprocess"
) -> dict[str, Any]:
    """Every setting of the modality's preprocessor, defaults filled in (validated, as JSON values)."""
    config_cls = _preprocessor_class(modality).config_cls
    return cast(dict[str, Any], parse_config(config_cls, dict(config), source=source).model_dump(mode="json"))
