"""Sensors: sources for camera, microphone and LiDAR (live devices, files, network, simulated)
and their preprocessing into Segments. `fusion.sensors.source` holds the source contract,
`fusion.sensors.registry` the names configs pick backends, probes and preprocessors by."""

from fusion.sensors.registry import (
    FileReport,
    backends,
    make_preprocessor,
    make_source,
    preprocess_settings,
    probe_file,
    register_preprocessor,
    register_probe,
    register_source,
    source_config_class,
)
from fusion.sensors.source import (
    EndOfStream,
    LiveSource,
    Source,
    SourceConfig,
    SourceError,
    SourceStats,
)

__all__ = [
    "EndOfStream",
    "FileReport",
    "LiveSource",
    "Source",
    "SourceConfig",
    "SourceError",
    "SourceStats",
    "backends",
    "make_preprocessor",
    "make_source",
    "preprocess_settings",
    "probe_file",
    "register_preprocessor",
    "register_probe",
    "register_source",
    "source_config_class",
]
