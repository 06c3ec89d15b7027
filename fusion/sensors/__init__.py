"""Sensors: sources for camera, microphone and LiDAR (live devices, files, network, simulated)
and their preprocessing into Segments. `fusion.sensors.source` holds the source contract,
`fusion.sensors.registry` the names configs pick backends, probes and preprocessors by; each
backend's config classes are in a light `*_config` module (`opencv_config`, `audio_config`,
`pointclouds_config`, `velodyne.config`, `ros.config`, `simulated_config`, `recording_config`)
beside the implementation that loads its library."""

from fusion.sensors.registry import (
    FileReport,
    backends,
    find_backend,
    make_preprocessor,
    make_source,
    parse_preprocess,
    parse_source,
    preprocess_settings,
    probe_file,
    register_backend,
    register_preprocessor,
    register_probe,
    source_class,
    source_config_class,
)
from fusion.sensors.source import (
    Backend,
    EndOfStream,
    LiveSource,
    Source,
    SourceConfig,
    SourceError,
    SourceStats,
)

__all__ = [
    "Backend",
    "EndOfStream",
    "FileReport",
    "LiveSource",
    "Source",
    "SourceConfig",
    "SourceError",
    "SourceStats",
    "backends",
    "find_backend",
    "make_preprocessor",
    "make_source",
    "parse_preprocess",
    "parse_source",
    "preprocess_settings",
    "probe_file",
    "register_backend",
    "register_preprocessor",
    "register_probe",
    "source_class",
    "source_config_class",
]
