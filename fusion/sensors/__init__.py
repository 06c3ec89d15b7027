"""Sensors: sources for camera, microphone and LiDAR (live devices, files, network, simulated)
and their preprocessing into Segments. See `fusion.sensors.base` for the source contract."""

from fusion.sensors.base import (
    EndOfStream,
    FileReport,
    LiveSource,
    Source,
    SourceConfig,
    SourceError,
    SourceStats,
    backends,
    make_source,
    probe_file,
    register_probe,
    register_source,
    source_config_class,
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
    "make_source",
    "probe_file",
    "register_probe",
    "register_source",
    "source_config_class",
]
