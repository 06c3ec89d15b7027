"""The layout of a recording directory and its `manifest.json`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

from fusion.config import ModalityKey, StrictModel, parse_config
from fusion.errors import InputError
from fusion.schema import READABLE_VERSIONS

MANIFEST = "manifest.json"
SAMPLES_STEM = "samples"
Format = Literal["arrow", "parquet"]
SUFFIX: dict[str, str] = {"arrow": ".arrow", "parquet": ".parquet"}


class StreamInfo(StrictModel):
    """One sensor stream of a recording."""

    modality: ModalityKey
    file: str  # file name inside the recording directory
    frames: int
    start: float  # first timestamp, seconds
    end: float  # last timestamp, seconds


class SamplesInfo(StrictModel):
    """The FusedSamples of a recording."""

    file: str
    count: int
    start: float
    end: float


class Manifest(StrictModel):
    """`manifest.json`: written last, when the recording is closed."""

    schema_version: int
    format: Format
    created_wall_time: float  # Unix seconds when the recording was started
    sensors: dict[str, StreamInfo]
    samples: SamplesInfo | None = None


def load_manifest(path: Path) -> Manifest:
    """`manifest.json` of a schema version this build reads; ValueError naming the file when it is not."""
    try:
        raw = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise InputError(f"{path}: not valid JSON: {err}") from None
    version = raw.get("schema_version") if isinstance(raw, dict) else None
    if version not in READABLE_VERSIONS:
        readable = ", ".join(str(v) for v in READABLE_VERSIONS)
        raise InputError(
            f"{path}: recording written with schema version {version}; this build reads {readable}"
        )
    manifest = parse_config(Manifest, raw, source=str(path))
    names = [info.file for info in manifest.sensors.values()]
    if manifest.samples is not None:
        names.append(manifest.samples.file)
    for name in names:
        if Path(name).name != name or name.startswith("."):
            raise InputError(f"{path}: file {name!r} is not a plain file name in the recording directory")
    return manifest
