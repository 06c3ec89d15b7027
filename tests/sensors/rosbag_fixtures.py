"""Bags written with rosbags' own writers from the frames of a simulated recording (shared by the
rosbag source tests and the pipeline replay test)."""

from __future__ import annotations

import dataclasses
import shutil
from collections.abc import Callable, Mapping, Sequence
from enum import StrEnum
from pathlib import Path
from typing import Any

from rosbags.rosbag1 import Writer as Writer1
from rosbags.rosbag2 import StoragePlugin
from rosbags.rosbag2 import Writer as Writer2

from fusion.offline import build_sources, open_all, record
from fusion.recording import RecordingReader, RecordingWriter
from fusion.sample import Frame, Modality
from fusion.sensors import parse_source
from fusion.sensors.ros.messages import audio_messages, cloud_message, image_message
from fusion.sensors.ros.types import (
    AUDIO_DATA_STAMPED,
    AUDIO_INFO,
    IMAGE,
    POINT_CLOUD2,
    RosVersion,
    seconds,
    to_ns,
    typestore,
)
from fusion.sensors.ros.types import header as ros_header

SIM_SENSORS: dict[str, dict[str, Any]] = {
    "cam0": {
        "modality": "camera",
        "source": {"backend": "simulated", "rate_hz": 30, "width": 96, "height": 72},
    },
    "mic0": {"modality": "microphone", "source": {"backend": "simulated", "rate_hz": 20}},
    "lidar0": {"modality": "lidar", "source": {"backend": "simulated", "rate_hz": 10, "azimuth_steps": 360}},
}
TOPICS = {"cam0": "/cam0/image_raw", "mic0": "/mic0/audio", "lidar0": "/lidar0/points"}
INFO_TOPIC = "/mic0/audio_info"
MSGTYPE = {Modality.CAMERA: IMAGE, Modality.MICROPHONE: AUDIO_DATA_STAMPED, Modality.LIDAR: POINT_CLOUD2}


class Kind(StrEnum):
    ROS1 = "ros1"  # .bag
    SQLITE3 = "sqlite3"  # ROS 2 folder
    MCAP = "mcap"  # ROS 2 folder, mcap storage
    MCAP_FILE = "mcap-file"  # the .mcap file of such a folder on its own


def record_sim(
    out: Path, duration_s: float, sensors: Mapping[str, Mapping[str, Any]] = SIM_SENSORS
) -> dict[str, list[Frame]]:
    """Record a simulated rig (`sensors`: id -> {modality, source}), then re-record its frames
    with timestamps on whole nanoseconds (what a ROS stamp holds) as `out`; returns those frames
    by sensor."""
    raw = out.with_name(out.name + "-raw")
    specs = {
        sid: (m, parse_source(m, {**s["source"], "duration_s": duration_s}))
        for sid, s in sensors.items()
        if (m := Modality(s["modality"]))
    }
    sources = build_sources(specs, rig="sim")
    open_all(sources)
    record(sources, RecordingWriter(raw), duration_s=None, progress=None)
    frames: dict[str, list[Frame]] = {}
    writer = RecordingWriter(out)
    for frame in RecordingReader(raw).frames():
        t = seconds(to_ns(frame.timestamp))
        frame = dataclasses.replace(frame, timestamp=t, wall_time=t)
        writer.write(frame)
        frames.setdefault(frame.sensor_id, []).append(frame)
    writer.close()
    shutil.rmtree(raw)
    return frames


Encoder = Callable[[Any, Frame, Any], Any]


def write_bag(
    path: Path,
    kind: Kind,
    frames: Mapping[str, Sequence[Frame]],
    *,
    log_delay_ns: int = 0,
    encode: Mapping[str, tuple[str, Encoder]] | None = None,
) -> Path:
    """A bag of `frames` (one topic per sensor, TOPICS) written by rosbags; returns what to open.

    Messages are logged `log_delay_ns` after their header stamp. `encode` replaces a sensor's
    (msgtype, encoder(types, frame, header) -> message).
    """
    version = RosVersion.ROS1 if kind is Kind.ROS1 else RosVersion.ROS2
    store = typestore(version)
    serialize = store.serialize_ros1 if version is RosVersion.ROS1 else store.serialize_cdr
    if kind is Kind.ROS1:
        writer: Any = Writer1(path.with_suffix(".bag"))
    else:
        plugin = StoragePlugin.SQLITE3 if kind is Kind.SQLITE3 else StoragePlugin.MCAP
        writer = Writer2(path, version=9, storage_plugin=plugin)
    encoders = {**_default_encoders(frames), **(encode or {})}
    merged = sorted(
        (f for fs in frames.values() for f in fs), key=lambda f: (f.timestamp, f.sensor_id, f.index)
    )
    with writer:
        conns = {sid: writer.add_connection(TOPICS[sid], encoders[sid][0], typestore=store) for sid in frames}
        info_conn = None
        if "mic0" in frames:
            info_conn = writer.add_connection(INFO_TOPIC, AUDIO_INFO, typestore=store)
        for seq, frame in enumerate(merged):
            ns = to_ns(frame.timestamp)
            msgtype, encoder = encoders[frame.sensor_id]
            hdr = ros_header(store, version, ns, frame.sensor_id, seq=seq)
            msg = encoder(store.types, frame, hdr)
            if isinstance(msg, tuple):  # audio: (data, info); the info once, before the first chunk
                msg, info = msg
                if info_conn is not None:
                    writer.write(info_conn, ns + log_delay_ns, serialize(info, AUDIO_INFO))
                    info_conn = None
            writer.write(conns[frame.sensor_id], ns + log_delay_ns, serialize(msg, msgtype))
    if kind is Kind.ROS1:
        return path.with_suffix(".bag")
    if kind is Kind.MCAP_FILE:
        (mcap,) = path.glob("*.mcap")
        standalone = path.with_suffix(".mcap")
        shutil.copy(mcap, standalone)
        return standalone
    return path


def _default_encoders(frames: Mapping[str, Sequence[Frame]]) -> dict[str, tuple[str, Encoder]]:
    def encoder(modality: Modality) -> Encoder:
        match modality:
            case Modality.CAMERA:
                return lambda types, f, h: image_message(types, f.data, header=h)
            case Modality.LIDAR:
                return lambda types, f, h: cloud_message(types, f.data, header=h)
            case Modality.MICROPHONE:
                return lambda types, f, h: audio_messages(types, f.data, f.sample_rate, header=h)

    return {sid: (MSGTYPE[fs[0].modality], encoder(fs[0].modality)) for sid, fs in frames.items()}


def rosbag_sources(path: Path) -> dict[str, tuple[Modality, dict[str, Any]]]:
    """The rig's sensors as rosbag source mappings over `path` (`parse_source` validates one)."""
    return {
        sid: (Modality(spec["modality"]), {"backend": "rosbag", "path": str(path), "topic": TOPICS[sid]})
        for sid, spec in SIM_SENSORS.items()
    }


def rosbag_configs(path: Path) -> dict[str, tuple[Modality, Any]]:
    """The rig's sensors as validated rosbag source configs over `path` (for `build_sources`)."""
    return {sid: (m, parse_source(m, raw)) for sid, (m, raw) in rosbag_sources(path).items()}
