"""One registry for what the sensors package offers by name: sources, file probes, preprocessors.

- Sources, keyed by backend name: each `Backend` names the modalities it serves with their
  config classes and the `Source` class that reads them. A config picks and validates its
  backend through `make_source` / `source_config_class`, no if/elif dispatch.
- File probes: what `fusion inspect` says about a file or folder (`probe_file`).
- Preprocessors, keyed by modality, each with its config class (`make_preprocessor`).

Backends are declared in light config modules (the config classes and a `register_backend`
call, no device or file library), listed below and imported on the first lookup; a backend's
`Source` class lives in its implementation module, which loads the backend's library and is
imported only when a source of that backend is built. So validating a pipeline config loads
no backend library, and a sensor process loads only its own backend's. File probes register
with `@register_probe` in the implementation modules, which `probe_file` imports. Backend
modules import the registry, never the other way round at import time: no import cycle.
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
from fusion.sample import Modality
from fusion.sensors.preprocess_config import Preprocessor
from fusion.sensors.source import Backend, Source, SourceConfig

# The built-in backends' config modules: light, each registers the backends it declares.
CONFIG_MODULES = (
    "fusion.sensors.opencv_config",
    "fusion.sensors.audio_config",
    "fusion.sensors.pointclouds_config",
    "fusion.sensors.velodyne.config",
    "fusion.sensors.ros.config",
    "fusion.sensors.simulated_config",
    "fusion.sensors.recording_config",
)
PREPROCESSOR_MODULES = ("fusion.sensors.preprocessors",)


@functools.cache
def _load(modules: tuple[str, ...]) -> None:
    """Import built-in modules once, so that their registrations run."""
    for name in modules:
        importlib.import_module(name)


# --- sources -------------------------------------------------------------------------------

_BACKENDS: dict[str, list[Backend]] = {}  # backend name -> the classes serving it, by modality


def register_backend(backend: Backend) -> Backend:
    """Make `backend` available to configs under `backend.name`; returns it.

    Args:
        backend: its name, the config class of each modality it serves (each one's `backend`
            field must default to that name) and its Source class as "module:Class".

    Raises RuntimeError when another Backend of that name already serves one of its modalities.
    """
    for modality, config_cls in backend.configs.items():
        field_info = config_cls.model_fields.get("backend")
        if field_info is None or field_info.default != backend.name:
            raise RuntimeError(
                f"{config_cls.__name__}: a {modality.value}/{backend.name} config must default backend to {backend.name!r}"
            )
    served = _BACKENDS.setdefault(backend.name, [])
    if backend in served:
        return backend
    for other in served:
        if twice := sorted(m.value for m in other.configs.keys() & backend.configs.keys()):
            raise RuntimeError(f"source backend {backend.name} registered twice for {', '.join(twice)}")
    served.append(backend)
    return backend


def backends(modality: Modality) -> list[str]:
    """The backend names a `modality` source config may ask for, sorted."""
    _load(CONFIG_MODULES)
    return sorted(name for name, served in _BACKENDS.items() if any(modality in b.configs for b in served))


def find_backend(modality: Modality, backend: object) -> Backend:
    """The Backend serving `modality` under the name `backend`; imports no backend library.

    Args:
        modality: what the sensor is.
        backend: the name a config gives (`backend:`).

    Raises InputError naming the backends `modality` has when none of that name serves it.
    """
    _load(CONFIG_MODULES)
    for served in _BACKENDS.get(str(backend), []):
        if modality in served.configs:
            return served
    known = ", ".join(backends(modality))
    raise InputError(f"unknown {modality.value} backend {backend!r} (known: {known})")


def source_config_class(modality: Modality, backend: str) -> type[SourceConfig]:
    """The config class of a (modality, backend), from the backend's light config module.

    Args:
        modality: what the sensor is.
        backend: the backend name a config gives.

    Raises InputError naming the known backends when there is no such backend for `modality`.
    """
    return find_backend(modality, backend).configs[modality]


def source_class(modality: Modality, backend: str) -> type[Source]:
    """The Source class serving a (modality, backend): imports its module, and so its library.

    Args:
        modality: what the sensor is.
        backend: the backend name a config gives.

    Raises InputError naming the known backends when there is no such backend for `modality`.
    """
    return _implementation(find_backend(modality, backend))


def _implementation(backend: Backend) -> type[Source]:
    module, _, name = backend.source.partition(":")
    cls = getattr(importlib.import_module(module), name)
    if not (isinstance(cls, type) and issubclass(cls, Source) and cls.backend is backend):
        raise RuntimeError(f"{backend.source} is not the Source class of backend {backend.name}")
    return cls


def parse_source(modality: Modality, raw: Mapping[str, Any], *, source: str = "sensor") -> SourceConfig:
    """Validate a source config mapping (a YAML `source:` section) against its backend's config
    class: the config loader's one door from a mapping to a SourceConfig.

    Args:
        modality: what the sensor is.
        raw: the mapping; its `backend` picks the config class.
        source: where the mapping comes from, e.g. `rigs[sim].sensors.cam0.source`; errors name
            it (`<source>.backend: unknown camera backend ...`, `<source>.KEY: ...`).

    Imports only the backend's light config module. Raises InputError for an unknown backend or
    a bad key.
    """
    try:
        backend = find_backend(modality, raw.get("backend"))
    except InputError as err:
        raise InputError(f"{source}.backend: {err}") from None
    return parse_config(backend.configs[modality], dict(raw), source=source)


def make_source(modality: Modality, config: SourceConfig, *, source: str = "sensor") -> Source:
    """Build (not open) the source a validated config asks for (`parse_source` makes one).

    Args:
        modality: what the sensor is.
        config: an instance of the config class of its backend for `modality`.
        source: where the config comes from, named in errors.

    Only the chosen backend's implementation module is imported (and its library loaded).
    Raises InputError for a config of another class than its backend's for `modality`.
    """
    backend = find_backend(modality, config.backend)
    config_cls = backend.configs[modality]
    if not isinstance(config, config_cls):
        raise InputError(
            f"{source}: a {type(config).__name__} is not a {modality.value}/{config.backend} config "
            f"(expected {config_cls.__name__})"
        )
    return _implementation(backend)(config, modality=modality)


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
    """Describe a supported file; InputError naming the file when none can read it.

    Imports every backend's implementation module (their probes register there), so it loads
    every backend library: a file is matched against all of them.
    """
    _load(CONFIG_MODULES)
    _load(tuple(dict.fromkeys(b.source.partition(":")[0] for bs in _BACKENDS.values() for b in bs)))
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


def parse_preprocess(
    modality: Modality, raw: Mapping[str, Any], *, source: str = "preprocess"
) -> StrictModel:
    """Validate a modality's preprocessing mapping against its preprocessor's config class (the
    config loader's door); errors name `source` and the key."""
    return parse_config(_preprocessor_class(modality).config_cls, dict(raw), source=source)


def make_preprocessor(
    modality: Modality, config: StrictModel | None, *, source: str = "preprocess"
) -> Preprocessor:
    """The modality's preprocessor.

    Args:
        modality: which preprocessor.
        config: its validated settings (`parse_preprocess` makes them from a mapping); None: the
            defaults.
        source: where the settings come from, named in errors.

    Raises InputError when `config` is another modality's settings.
    """
    cls = _preprocessor_class(modality)
    if config is None:
        return cls(cls.config_cls())
    if not isinstance(config, cls.config_cls):
        raise InputError(f"{source}: a {type(config).__name__} is not a {cls.config_cls.__name__}")
    return cls(config)


def preprocess_settings(
    modality: Modality, config: Mapping[str, Any], *, source: str = "preprocess"
) -> dict[str, Any]:
    """Every setting of the modality's preprocessor, defaults filled in (validated, as JSON values)."""
    config_cls = _preprocessor_class(modality).config_cls
    return cast(dict[str, Any], parse_config(config_cls, dict(config), source=source).model_dump(mode="json"))
