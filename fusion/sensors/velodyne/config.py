"""The configs of the Velodyne backends (`pcap`: a capture, `velodyne`: a live sensor on UDP): light.

The sources that read them are in `fusion.sensors.velodyne.source`, which loads velodyne-decoder
and dpkt; this module only declares the backends. A sensor model is checked against the names
velodyne-decoder knows, listed here so that a config validates without loading it.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, field_validator

from fusion.errors import InputError
from fusion.sample import Modality
from fusion.sensors.registry import register_backend
from fusion.sensors.source import Backend, SourceConfig

# velodyne-decoder's `Model` names (3.x); tests/sensors/test_velodyne.py checks them against it.
MODELS = (
    "HDL64E_S1",
    "HDL64E_S2",
    "HDL64E_S3",
    "HDL32E",
    "VLP32A",
    "VLP32B",
    "VLP32C",
    "VLP16",
    "PuckLite",
    "PuckHiRes",
    "VLS128",
    "AlphaPrime",
)


def model_key(name: str) -> str:
    """The spelling-free key of a model name: "VLP-16", "vlp16" and "VLP16" all give "VLP16"."""
    return re.sub(r"[^A-Z0-9]", "", name.upper())


_MODEL_NAMES = {model_key(m): m for m in MODELS}


def model_name(name: str | None) -> str | None:
    """velodyne-decoder's name for a model like "VLP-16" ("HDL-64E S3" and its own names too);
    None (detect from the packets) for None; InputError naming the known models otherwise."""
    if name is None:
        return None
    model = _MODEL_NAMES.get(model_key(name))
    if model is None:
        raise InputError(f"unknown Velodyne model {name!r} (known: {', '.join(sorted(MODELS))})")
    return model


class VelodyneDecoderFields(SourceConfig):
    """What velodyne-decoder needs to know about the sensor."""

    model: str | None = "VLP-16"  # e.g. VLP-16, HDL-32E, VLP-32C, Puck Hi-Res; None: from the packets
    calibration: str | None = None  # ROS-style calibration YAML; None: the model's bundled one
    # Motor speed set on the sensor; a sweep spanning under half a rotation at this speed is
    # dropped as a fragment ("partial_sweep").
    rpm: float = Field(default=600.0, ge=300, le=1200)

    @field_validator("model")
    @classmethod
    def _known_model(cls, value: str | None) -> str | None:
        model_name(value)
        return value


class PcapConfig(VelodyneDecoderFields):
    backend: Literal["pcap"] = "pcap"
    path: str  # a .pcap / .pcapng capture
    port: int = Field(default=2368, ge=1, le=65535)  # UDP port of the data packets


class VelodyneConfig(VelodyneDecoderFields):
    backend: Literal["velodyne"] = "velodyne"
    # Address to listen on. Every interface by default: a Velodyne sends to the sensor host's LAN
    # address (or broadcast), never to its loopback, so 127.0.0.1 would hear nothing there.
    host: str = "0.0.0.0"
    port: int = Field(default=2368, ge=0, le=65535)  # 0: any free port (see `address`)
    timeout_s: float = Field(default=1.0, gt=0)  # silence after which the sensor counts as lost


PCAP = register_backend(
    Backend("pcap", {Modality.LIDAR: PcapConfig}, "fusion.sensors.velodyne.source:PcapSource")
)
VELODYNE = register_backend(
    Backend("velodyne", {Modality.LIDAR: VelodyneConfig}, "fusion.sensors.velodyne.source:VelodyneSource")
)
