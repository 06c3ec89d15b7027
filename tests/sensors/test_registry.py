"""The one registry of sources, probes and preprocessors: lookups, errors, and lazy loading."""

from __future__ import annotations

import subprocess
import sys

import pytest

from fusion.sample import Modality
from fusion.sensors import (
    Backend,
    SourceConfig,
    backends,
    find_backend,
    make_preprocessor,
    make_source,
    parse_preprocess,
    parse_source,
    register_backend,
    source_class,
    source_config_class,
)
from fusion.sensors.registry import CONFIG_MODULES, PREPROCESSOR_MODULES, register_preprocessor
from fusion.sensors.simulated_config import SimCameraConfig

# Libraries only a backend needs: importing the registry must load none of them.
BACKEND_LIBRARIES = ("cv2", "open3d", "librosa", "soundfile", "velodyne_decoder", "dpkt", "pyarrow")


def test_importing_the_registry_loads_no_backend() -> None:
    """Backends import the registry, never the reverse at import time: no cycle, and a process
    that only validates configs or preprocesses loads no device or file library."""
    backend_modules = (*CONFIG_MODULES, *PREPROCESSOR_MODULES, *BACKEND_LIBRARIES)
    code = (
        "import sys, fusion.sensors, fusion.sensors.registry\n"
        f"loaded = [m for m in {backend_modules!r} if m in sys.modules]\n"
        "assert not loaded, loaded\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_backends_and_config_classes_by_modality() -> None:
    assert {"file", "device", "stream", "simulated", "recording"} <= set(backends(Modality.CAMERA))
    assert {"pointcloud", "kitti", "pcap", "velodyne"} <= set(backends(Modality.LIDAR))
    assert source_config_class(Modality.LIDAR, "kitti").__name__ == "KittiConfig"
    with pytest.raises(ValueError, match=r"unknown lidar backend 'radar' \(known: .*kitti"):
        source_config_class(Modality.LIDAR, "radar")


def test_one_backend_name_maps_to_the_classes_serving_it() -> None:
    """`device` and `file` are an OpenCV camera and a PortAudio / libsndfile microphone; `simulated`
    and `recording` are one class each for every modality."""
    assert find_backend(Modality.CAMERA, "device").source == "fusion.sensors.opencv:CameraDeviceSource"
    assert find_backend(Modality.MICROPHONE, "device").source == "fusion.sensors.audio:MicrophoneDeviceSource"
    assert source_config_class(Modality.MICROPHONE, "file").__name__ == "MicrophoneFileConfig"
    for name in ("simulated", "recording", "rosbag"):
        assert len({source_class(m, name) for m in Modality}) == 1, name
    assert set(find_backend(Modality.LIDAR, "simulated").configs) == set(Modality)


def test_a_second_class_for_a_served_modality_is_refused() -> None:
    with pytest.raises(RuntimeError, match="source backend simulated registered twice for camera"):
        register_backend(Backend("simulated", {Modality.CAMERA: SimCameraConfig}, "tests:Nothing"))
    with pytest.raises(RuntimeError, match="must default backend to 'other'"):
        register_backend(Backend("other", {Modality.CAMERA: SourceConfig}, "tests:Nothing"))


def test_make_source_refuses_a_config_of_another_backend() -> None:
    with pytest.raises(ValueError, match=r"^cam0: a SimCameraConfig is not a lidar/simulated config"):
        make_source(Modality.LIDAR, SimCameraConfig(), source="cam0")


def test_parse_source_names_the_key_of_an_unknown_backend() -> None:
    with pytest.raises(ValueError, match=r"^rig\.cam0\.source\.backend: unknown camera backend 'x'"):
        parse_source(Modality.CAMERA, {"backend": "x"}, source="rig.cam0.source")


def test_make_preprocessor_validates_its_config() -> None:
    lidar = make_preprocessor(Modality.LIDAR, parse_preprocess(Modality.LIDAR, {"max_points": 8}))
    assert lidar.modality is Modality.LIDAR and lidar.config.max_points == 8  # type: ignore[attr-defined]
    with pytest.raises(ValueError, match=r"lidar: max_pointz: Extra inputs are not permitted"):
        parse_preprocess(Modality.LIDAR, {"max_pointz": 8}, source="lidar")
    camera_config = make_preprocessor(Modality.CAMERA, None).config  # type: ignore[attr-defined]
    with pytest.raises(ValueError, match=r"is not a LidarPreprocessConfig"):
        make_preprocessor(Modality.LIDAR, camera_config)


def test_a_second_preprocessor_for_a_modality_is_refused() -> None:
    camera = type(make_preprocessor(Modality.CAMERA, None))

    class Other(camera):  # type: ignore[misc, valid-type]
        pass

    with pytest.raises(RuntimeError, match="camera preprocessor registered twice"):
        register_preprocessor(Other)
