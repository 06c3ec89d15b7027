"""The `rosbag` backend on bags written by rosbags' own writers: ROS 1, ROS 2 (sqlite3, mcap) and a
standalone MCAP file, all from the frames of one simulated recording."""

from __future__ import annotations

import heapq
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from fusion.errors import ConfigError, SourceError
from fusion.fuser import Fuser
from fusion.offline import build_sources, inspect_lines, open_all, replay_samples
from fusion.sample import Frame, FusedSample, Modality
from fusion.sensors import EndOfStream, make_source, parse_source
from fusion.sensors.ros.config import SampleFormat
from fusion.sensors.ros.messages import (
    AudioFormat,
    MessageError,
    audio_pcm,
    cloud_points,
    compressed_rgb,
    image_rgb,
)
from fusion.sensors.ros.types import COMPRESSED_IMAGE, RosVersion, header, to_ns, typestore
from tests.sensors.rosbag_fixtures import (
    INFO_TOPIC,
    TOPICS,
    Kind,
    record_sim,
    rosbag_configs,
    rosbag_sources,
    write_bag,
)

TYPES = typestore(RosVersion.ROS2).types


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, list[Frame]]]:
    """A 2 s recording of the simulated rig (Arrow) and its frames."""
    out = tmp_path_factory.mktemp("sim") / "rec"
    return out, record_sim(out, 2.0)


def read_all(path: Path, sensor: str, **extra: Any) -> tuple[list[Frame], Any]:
    modality, cfg = rosbag_sources(path)[sensor]
    src = make_source(modality, parse_source(modality, {**cfg, "sensor_id": sensor, **extra}))
    with src:
        return list(src), src.stats


def hdr(ns: int = 1_500_000_000) -> Any:
    return header(typestore(RosVersion.ROS2), RosVersion.ROS2, ns, "f")


@pytest.mark.parametrize("kind", list(Kind))
def test_bag_frames_equal_the_recorded_frames(tmp_path: Path, recorded, kind: Kind) -> None:
    _, frames = recorded
    path = write_bag(tmp_path / "bag", kind, frames)
    for sensor, want in frames.items():
        got, stats = read_all(path, sensor)
        assert not stats.errors and stats.frames == len(want) > 0
        assert [f.index for f in got] == [f.index for f in want]
        for g, w in zip(got, want, strict=True):
            assert (g.modality, g.timestamp, g.sample_rate) == (w.modality, w.timestamp, w.sample_rate)
            assert g.data.dtype == w.data.dtype
            np.testing.assert_array_equal(g.data, w.data)  # rgb8, float32 points, F32LE: lossless


def _bag_samples(path: Path) -> list[FusedSample]:
    """The bag's sensors merged in time order through a lossless Fuser, as replay does a recording."""
    sources = build_sources(rosbag_configs(path), rig="replay")
    open_all(sources)
    fuser = Fuser(rig="replay", sensors={sid: s.modality for sid, s in sources.items()}, lossless=True)
    merged = heapq.merge(
        *(iter(s) for _, s in sorted(sources.items())), key=lambda f: (f.timestamp, f.sensor_id, f.index)
    )
    samples = [s for frame in merged for s in fuser.push([frame])]
    return samples + list(fuser.finish())


@pytest.mark.parametrize("kind", [Kind.ROS1, Kind.MCAP])
def test_bag_fuses_into_the_samples_of_the_arrow_recording(tmp_path: Path, recorded, kind: Kind) -> None:
    rec, frames = recorded
    want = list(replay_samples(rec, speed=None))
    got = _bag_samples(write_bag(tmp_path / "bag", kind, frames))
    assert len(got) == len(want) == 20  # one per LiDAR sweep
    assert set(want[-1].segments) == set(Modality)  # once the audio window has filled
    for g, w in zip(got, want, strict=True):
        assert (g.seq, g.timestamp, g.capture_times) == (w.seq, w.timestamp, w.capture_times)
        assert set(g.segments) == set(w.segments)
        for m, seg in w.segments.items():
            np.testing.assert_array_equal(g.segments[m].values, seg.values)
            assert g.segments[m].grid == seg.grid
            if seg.positions is not None:
                np.testing.assert_array_equal(g.segments[m].positions, seg.positions)


def test_receive_time_stamps_frames_when_the_bag_logged_them(tmp_path: Path, recorded) -> None:
    _, frames = recorded
    path = write_bag(tmp_path / "bag", Kind.SQLITE3, {"lidar0": frames["lidar0"]}, log_delay_ns=5_000_000)
    got, _ = read_all(path, "lidar0", time="receive")
    assert [to_ns(f.timestamp) for f in got] == [to_ns(f.timestamp) + 5_000_000 for f in frames["lidar0"]]


# --------------------------------------------------------------------------- images


def _image(encoding: str, pixels: np.ndarray, *, step_pad: int = 0, bigendian: bool = False) -> Any:
    h, w = pixels.shape[:2]
    rows = pixels.reshape(h, -1).view(np.uint8)
    padded = np.zeros((h, rows.shape[1] + step_pad), np.uint8)
    padded[:, : rows.shape[1]] = rows
    return TYPES["sensor_msgs/msg/Image"](
        header=hdr(),
        height=h,
        width=w,
        encoding=encoding,
        is_bigendian=bigendian,
        step=padded.shape[1],
        data=padded.reshape(-1),
    )


RGB = np.random.default_rng(0).integers(0, 256, (6, 8, 3), dtype=np.uint8)


@pytest.mark.parametrize(
    ("encoding", "pixels"),
    [
        ("rgb8", RGB),
        ("bgr8", RGB[:, :, ::-1]),
        ("rgba8", np.dstack([RGB, np.full(RGB.shape[:2], 7, np.uint8)])),
        ("bgra8", np.dstack([RGB[:, :, ::-1], np.zeros(RGB.shape[:2], np.uint8)])),
        ("rgb16", RGB.astype("<u2") << 8 | 0x5A),
    ],
)
def test_colour_encodings_decode_to_rgb_with_padded_rows(encoding: str, pixels: np.ndarray) -> None:
    np.testing.assert_array_equal(image_rgb(_image(encoding, np.ascontiguousarray(pixels), step_pad=5)), RGB)


def test_mono_encodings_become_grey_rgb_16_bit_by_its_high_byte() -> None:
    grey = RGB[:, :, 0]
    for msg in (
        _image("mono8", grey),
        _image("mono16", (grey.astype("<u2") << 8) | 0xFF),
        _image("16UC1", ((grey.astype(">u2") << 8) | 0x01).astype(">u2"), bigendian=True),
    ):
        np.testing.assert_array_equal(image_rgb(msg), np.repeat(grey[:, :, None], 3, axis=2))


def test_bayer_rggb_demosaics_to_the_colour_it_was_taken_of() -> None:
    mosaic = np.zeros((8, 8), np.uint8)  # a flat (200, 100, 50) scene seen through an RGGB filter
    mosaic[0::2, 0::2], mosaic[0::2, 1::2], mosaic[1::2, 0::2], mosaic[1::2, 1::2] = 200, 100, 100, 50
    rgb = image_rgb(_image("bayer_rggb8", mosaic))
    np.testing.assert_allclose(rgb[2:-2, 2:-2].reshape(-1, 3).mean(axis=0), (200, 100, 50), atol=1)


def test_compressed_jpeg_and_png_decode_to_rgb() -> None:
    yy, xx = np.mgrid[0:48, 0:64]
    smooth = np.dstack([xx * 4, yy * 5, (xx + yy) * 2]).astype(np.uint8)  # JPEG keeps gradients well
    for ext, tol in ((".png", 0), (".jpg", 8)):
        _, buf = cv2.imencode(ext, cv2.cvtColor(smooth, cv2.COLOR_RGB2BGR))
        msg = TYPES[COMPRESSED_IMAGE](header=hdr(), format=ext[1:], data=buf.reshape(-1))
        got = compressed_rgb(msg)
        assert got.shape == smooth.shape
        assert np.abs(got.astype(int) - smooth).max() <= tol


def test_unsupported_and_short_images_name_the_problem() -> None:
    with pytest.raises(MessageError, match="'32FC1'") as err:
        image_rgb(_image("32FC1", np.zeros((2, 2), np.float32)))
    assert err.value.reason == "unsupported_encoding"
    short = _image("rgb8", RGB)
    short.data = short.data[:-1]
    with pytest.raises(MessageError, match="in 143 bytes") as err:
        image_rgb(short)
    assert err.value.reason == "bad_message"
    with pytest.raises(MessageError) as err:
        compressed_rgb(
            TYPES[COMPRESSED_IMAGE](header=hdr(), format="jpeg", data=np.arange(50, dtype=np.uint8))
        )
    assert err.value.reason == "decode_error"


# --------------------------------------------------------------------------- point clouds


def _cloud(
    fields: list[tuple[str, int, str]],
    points: dict[str, np.ndarray],
    *,
    step: int,
    bigendian: bool,
    pad_row: int = 0,
) -> Any:
    """A PointCloud2 of fields (name, ROS datatype, numpy type) at their own offsets, 2 rows."""
    order = ">" if bigendian else "<"
    dtype = np.dtype(
        {
            "names": [f[0] for f in fields],
            "formats": [order + f[2] for f in fields],
            "offsets": [fields_offset(fields, i) for i in range(len(fields))],
            "itemsize": step,
        }
    )
    n = len(next(iter(points.values())))
    arr = np.zeros(n, dtype)
    for name, values in points.items():
        arr[name] = values
    rows = arr.view(np.uint8).reshape(2, -1)
    rows = np.hstack([rows, np.full((2, pad_row), 0xAB, np.uint8)])
    field = TYPES["sensor_msgs/msg/PointField"]
    ros_types = {"f4": 7, "f8": 8, "u2": 4, "u1": 2, "i4": 5}
    return TYPES["sensor_msgs/msg/PointCloud2"](
        header=hdr(), height=2, width=n // 2,
        fields=[field(name=f[0], offset=fields_offset(fields, i), datatype=ros_types[f[2]], count=1) for i, f in enumerate(fields)],
        is_bigendian=bigendian, point_step=step, row_step=rows.shape[1], data=rows.reshape(-1), is_dense=False,
    )  # fmt: skip


def fields_offset(fields: list[tuple[str, int, str]], i: int) -> int:
    return fields[i][1]


def test_point_cloud_any_layout_endianness_and_padding() -> None:
    rng = np.random.default_rng(1)
    xyz = rng.normal(size=(6, 3)) * 10
    intensity = rng.integers(0, 4000, 6)
    # Intensity first as uint16, then float64 z, y, x, 40-byte points, padded rows, big-endian.
    fields = [("intensity", 0, "u2"), ("ring", 2, "u1"), ("z", 4, "f8"), ("y", 16, "f8"), ("x", 24, "f8")]
    msg = _cloud(
        fields,
        {"x": xyz[:, 0], "y": xyz[:, 1], "z": xyz[:, 2], "intensity": intensity},
        step=40,
        bigendian=True,
        pad_row=12,
    )
    got = cloud_points(msg)
    assert got.dtype == np.float32 and got.shape == (6, 4)
    np.testing.assert_allclose(got[:, :3], xyz, rtol=1e-6)
    np.testing.assert_array_equal(got[:, 3], intensity)


def test_point_cloud_without_intensity_reads_zero_and_without_z_is_refused() -> None:
    xy = {"x": np.arange(4.0), "y": np.arange(4.0), "z": np.ones(4)}
    got = cloud_points(_cloud([("x", 0, "f4"), ("y", 4, "f4"), ("z", 8, "f4")], xy, step=16, bigendian=False))
    np.testing.assert_array_equal(got[:, 3], 0)
    with pytest.raises(MessageError, match=r"without field\(s\) z") as err:
        cloud_points(
            _cloud([("x", 0, "f4"), ("y", 4, "f4")], {"x": xy["x"], "y": xy["y"]}, step=8, bigendian=False)
        )
    assert err.value.reason == "unsupported_fields"


def test_nan_points_are_dropped_and_counted(tmp_path: Path, recorded) -> None:
    _, frames = recorded
    sweeps = [f for f in frames["lidar0"][:3]]
    bad = sweeps[1].data.copy()
    bad[:5, 0] = np.nan
    sweeps[1] = Frame(Modality.LIDAR, "lidar0", sweeps[1].timestamp, sweeps[1].wall_time, bad, index=1)
    got, stats = read_all(write_bag(tmp_path / "b", Kind.ROS1, {"lidar0": sweeps}), "lidar0")
    assert [len(f.data) for f in got] == [len(sweeps[0].data), len(bad) - 5, len(sweeps[2].data)]
    assert stats.errors == {"nonfinite_points": 1}


def test_velodyne_scans_decode_one_sweep_per_message_and_skip_bad_packets(tmp_path: Path) -> None:
    from tests.sensors.test_velodyne import bad_flag, check_sphere_sweep, vlp16_packets

    packets = vlp16_packets(3.0)
    per_turn = len(packets) // 3
    scans = [packets[i * per_turn : (i + 1) * per_turn] for i in range(3)]
    scans[1][4] = (scans[1][4][0], bad_flag(scans[1][4][1]))
    frames = [
        Frame(Modality.LIDAR, "lidar0", i * 0.1, i * 0.1, np.zeros((1, 4), np.float32), index=i)
        for i in range(3)
    ]

    def velodyne_scan(types: Any, f: Frame, h: Any) -> Any:
        packet = types["velodyne_msgs/msg/VelodynePacket"]
        return types["velodyne_msgs/msg/VelodyneScan"](
            header=h,
            packets=[packet(stamp=h.stamp, data=np.frombuffer(p, np.uint8)) for _, p in scans[f.index]],
        )

    encode = {"lidar0": ("velodyne_msgs/msg/VelodyneScan", velodyne_scan)}
    for kind in (Kind.ROS1, Kind.MCAP):
        got, stats = read_all(
            write_bag(tmp_path / kind.value, kind, {"lidar0": frames}, encode=encode),
            "lidar0",
            model="VLP-16",
        )
        assert [f.timestamp for f in got] == [0.0, 0.1, 0.2]
        for frame in (got[0], got[2]):
            check_sphere_sweep(frame.data)
        assert len(got[1].data) == len(got[0].data) - 384  # the bad packet's 384 returns
        assert stats.errors == {"bad_packet": 1}


# --------------------------------------------------------------------------- audio


def test_pcm_formats_decode_to_mono_float() -> None:
    stereo = np.array([[0.5, -0.5], [0.25, 0.75], [-1.0, -1.0]])
    for name, raw in (
        ("S16LE", (stereo * 32768).clip(-32768, 32767).astype("<i2")),
        ("S32LE", (stereo * 2**31).clip(-(2**31), 2**31 - 1).astype("<i4")),
        ("F32LE", stereo.astype("<f4")),
        ("U8", (stereo * 128 + 128).clip(0, 255).astype("u1")),
    ):
        got = audio_pcm(raw.reshape(-1).view(np.uint8), AudioFormat(16000, 2, SampleFormat(name)))
        np.testing.assert_allclose(got, stereo.mean(axis=1), atol=1 / 128, err_msg=name)
    s24 = np.array([0x7FFFFF, -0x800000, 0x400000], dtype="<i4").view(np.uint8).reshape(-1, 4)[:, :3]
    got = audio_pcm(s24.reshape(-1), AudioFormat(16000, 1, SampleFormat.S24LE))
    np.testing.assert_allclose(got, [1.0, -1.0, 0.5], atol=1e-6)
    with pytest.raises(MessageError, match="not whole 2-channel S16LE"):
        audio_pcm(np.zeros(6, np.uint8), AudioFormat(16000, 2, SampleFormat.S16LE))


def _s16_stereo(types: Any, f: Frame, h: Any) -> Any:
    pcm = (np.stack([f.data, f.data], axis=1) * 32767).astype("<i2")
    return types["audio_common_msgs/msg/AudioData"](data=pcm.reshape(-1).view(np.uint8))


def test_unstamped_s16_stereo_audio_with_config_format_needs_receive_time(tmp_path: Path, recorded) -> None:
    _, frames = recorded
    encode = {"mic0": ("audio_common_msgs/msg/AudioData", _s16_stereo)}
    path = write_bag(tmp_path / "b", Kind.MCAP, {"mic0": frames["mic0"]}, encode=encode)
    with pytest.raises(SourceError, match=r"no header\.stamp: set `time: receive`"):
        read_all(path, "mic0", sample_rate=16000, channels=2)
    got, _ = read_all(path, "mic0", time="receive", sample_rate=16000, channels=2)
    want = frames["mic0"]
    assert [f.timestamp for f in got] == [f.timestamp for f in want]
    for g, w in zip(got, want, strict=True):
        assert g.sample_rate == 16000
        np.testing.assert_allclose(g.data, w.data, atol=2 / 32768)  # 16-bit steps


def test_audio_info_with_a_coding_fusion_cannot_read_fails_at_open(tmp_path: Path, recorded) -> None:
    _, frames = recorded

    def mp3(types: Any, f: Frame, h: Any) -> Any:
        data, info = (
            types["audio_common_msgs/msg/AudioDataStamped"](
                header=h, audio=types["audio_common_msgs/msg/AudioData"](data=np.zeros(4, np.uint8))
            ),
            None,
        )
        info = types["audio_common_msgs/msg/AudioInfo"](
            channels=1, sample_rate=16000, sample_format="S16LE", bitrate=0, coding_format="mp3"
        )
        return data, info

    path = write_bag(
        tmp_path / "b",
        Kind.ROS1,
        {"mic0": frames["mic0"][:2]},
        encode={"mic0": ("audio_common_msgs/msg/AudioDataStamped", mp3)},
    )
    with pytest.raises(SourceError, match=f"{INFO_TOPIC}: audio coding 'mp3' is not supported"):
        read_all(path, "mic0")
    with pytest.raises(ConfigError, match="sample_format"):
        read_all(path, "mic0", sample_rate=8000, sample_format="MP3")


# --------------------------------------------------------------------------- bad input


def test_missing_topic_lists_the_topics_present(tmp_path: Path, recorded) -> None:
    _, frames = recorded
    path = write_bag(tmp_path / "b", Kind.ROS1, {"cam0": frames["cam0"][:2]})
    with pytest.raises(
        SourceError, match=r"no topic '/front/image' \(topics: /cam0/image_raw \(sensor_msgs/msg/Image\)\)"
    ):
        make_source(
            Modality.CAMERA,
            parse_source(Modality.CAMERA, {"backend": "rosbag", "path": str(path), "topic": "/front/image"}),
        ).open()


def test_a_topic_of_a_type_the_modality_cannot_read_names_both(tmp_path: Path, recorded) -> None:
    _, frames = recorded
    path = write_bag(tmp_path / "b", Kind.SQLITE3, {"cam0": frames["cam0"][:2]})
    with pytest.raises(
        SourceError,
        match="topic /cam0/image_raw is sensor_msgs/msg/Image; expected sensor_msgs/msg/PointCloud2 or velodyne_msgs/msg/VelodyneScan",
    ):
        make_source(
            Modality.LIDAR,
            parse_source(Modality.LIDAR, {"backend": "rosbag", "path": str(path), "topic": TOPICS["cam0"]}),
        ).open()


def test_unsupported_encoding_is_skipped_and_counted_naming_the_topic(
    tmp_path: Path, recorded, caplog
) -> None:
    _, frames = recorded

    def float_depth_every_other(types: Any, f: Frame, h: Any) -> Any:
        if f.index % 2:
            depth = np.zeros((4, 4), np.float32).view(np.uint8)
            return types["sensor_msgs/msg/Image"](
                header=h, height=4, width=4, encoding="32FC1", is_bigendian=0, step=16, data=depth.reshape(-1)
            )
        return types["sensor_msgs/msg/Image"](
            header=h, height=72, width=96, encoding="rgb8", is_bigendian=0, step=288, data=f.data.reshape(-1)
        )

    path = write_bag(
        tmp_path / "b",
        Kind.MCAP_FILE,
        {"cam0": frames["cam0"][:6]},
        encode={"cam0": ("sensor_msgs/msg/Image", float_depth_every_other)},
    )
    got, stats = read_all(path, "cam0")
    assert [f.index for f in got] == [0, 2, 4]
    assert stats.errors == {"unsupported_encoding": 3}
    assert f"{path} topic /cam0/image_raw: message 1: image encoding '32FC1'" in caplog.text


@pytest.mark.parametrize("kind", [Kind.ROS1, Kind.MCAP_FILE, Kind.SQLITE3])
def test_truncated_bag_fails_at_open_naming_the_file(tmp_path: Path, recorded, kind: Kind) -> None:
    _, frames = recorded
    path = write_bag(tmp_path / "b", kind, {"lidar0": frames["lidar0"]})
    file = next(path.glob("*.db3")) if path.is_dir() else path
    file.write_bytes(file.read_bytes()[: file.stat().st_size // 2])
    with pytest.raises(
        SourceError, match=f"lidar 'lidar0': {path}: cannot read this .* \\(corrupt or truncated\\?\\)"
    ):
        make_source(
            Modality.LIDAR,
            parse_source(
                Modality.LIDAR,
                {"backend": "rosbag", "path": str(path), "topic": TOPICS["lidar0"], "sensor_id": "lidar0"},
            ),
        ).open()


def test_damage_inside_a_bag_skips_and_counts_never_raises(tmp_path: Path, recorded) -> None:
    _, frames = recorded
    path = write_bag(tmp_path / "b", Kind.ROS1, {"lidar0": frames["lidar0"]})
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 4000] = b"\xff" * 4000
    path.write_bytes(bytes(data))
    modality, cfg = rosbag_sources(path)["lidar0"]
    src = make_source(modality, parse_source(modality, cfg))
    src.open()
    got = []
    while True:
        try:
            got.append(src.read())
        except EndOfStream:
            break
    src.close()
    assert 0 < len(got) < len(frames["lidar0"])
    assert (
        set(src.stats.errors) <= {"bad_message", "corrupt_bag", "nonfinite_points", "unsupported_fields"}
        and src.stats.errors
    )


# --------------------------------------------------------------------------- inspect


def test_inspect_lists_each_topic_with_type_count_rate_and_modality(tmp_path: Path, recorded) -> None:
    _, frames = recorded
    path = write_bag(tmp_path / "b", Kind.MCAP, frames)
    lines, ok = inspect_lines([str(path)])
    assert ok, lines
    assert lines[0].startswith(f"{path}: camera (rosbag), 121 frames, 0.000-1.967 s")
    assert "feeds camera, lidar, microphone" in lines[0]
    assert "  format: ROS 2 bag" in lines
    assert "  /cam0/image_raw: sensor_msgs/msg/Image, 60 messages, 30.00/s, feeds camera" in lines
    assert "  /lidar0/points: sensor_msgs/msg/PointCloud2, 20 messages, 10.00/s, feeds lidar" in lines
    assert (
        "  /mic0/audio: audio_common_msgs/msg/AudioDataStamped, 40 messages, 20.00/s, feeds microphone"
        in lines
    )
    assert (
        "  /mic0/audio_info: audio_common_msgs/msg/AudioInfo, 1 messages, 0.00/s, not a sensor fusion reads"
        in lines
    )
    broken = tmp_path / "broken.bag"
    broken.write_bytes(b"#ROSBAG V2.0\n" + b"\0" * 10)
    lines, ok = inspect_lines([str(broken)])
    assert not ok and len(lines) == 1
    assert lines[0].startswith(f"{broken}: error: cannot read this ROS 1 bag (corrupt or truncated?): ")
