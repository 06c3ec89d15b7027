"""Velodyne sources against real VLP-16 data packets built here from known geometry.

The packets follow the VLP-16 user manual (63-9243 Rev E, ch. 9): every return lies on a
sphere of radius 10 m around the sensor, and each laser reports its own intensity, so a
decoded point's elevation tells which laser fired it and its intensity must agree.
"""

from __future__ import annotations

import math
import socket
import struct
import time
from pathlib import Path

import numpy as np
import pytest
import velodyne_decoder as vd

from fusion.errors import SourceError
from fusion.sample import Modality
from fusion.sensors import EndOfStream, make_source, parse_source
from fusion.sensors.velodyne.config import MODELS, PcapConfig, VelodyneConfig
from fusion.sensors.velodyne.packets import packet_problem, parse_model
from fusion.sensors.velodyne.source import PcapSource, VelodyneSource, probe_pcap

# Laser id -> elevation, degrees (VLP-16 manual, table 9-1).
ELEVATIONS = np.array([-15, 1, -13, 3, -11, 5, -9, 7, -7, 9, -5, 11, -3, 13, -1, 15], dtype=np.float64)
RADIUS_M = 10.0
BLOCK_US = 2 * 55.296  # a firing block holds two 16-laser firing sequences
RPM = 600.0
HOUR_US = 3_600_000_000

_BLOCK = np.dtype(
    [("flag", "<u2"), ("azimuth", "<u2"), ("returns", [("dist", "<u2"), ("intensity", "u1")], (32,))]
)
_PACKET = np.dtype([("blocks", _BLOCK, (12,)), ("stamp", "<u4"), ("mode", "u1"), ("product", "u1")])
assert _PACKET.itemsize == 1206


def laser_intensity(laser: np.ndarray) -> np.ndarray:
    return 10 * laser + 5


def vlp16_packets(rotations: float, *, start_us: int = 1_000_000) -> list[tuple[int, bytes]]:
    """(device stamp in microseconds past the hour, 1206-byte payload) for `rotations` turns at RPM."""
    deg_per_block = RPM * 6.0 * BLOCK_US * 1e-6  # rpm * 360 / 60 degrees per second
    n_packets = math.ceil(rotations * 360.0 / deg_per_block / 12)
    packets = np.zeros(n_packets, dtype=_PACKET)
    block = np.arange(n_packets * 12).reshape(n_packets, 12)
    blocks = packets["blocks"]
    blocks["flag"] = 0xEEFF  # bytes FF EE on the wire
    blocks["azimuth"] = np.round((block * deg_per_block % 360.0) * 100).astype(np.int64) % 36000
    blocks["returns"]["dist"] = round(RADIUS_M / 0.002)  # 2 mm units
    blocks["returns"]["intensity"] = laser_intensity(np.arange(32) % 16)
    stamps = start_us + np.round(np.arange(n_packets) * 12 * BLOCK_US).astype(np.int64)
    packets["stamp"] = stamps % HOUR_US
    packets["mode"] = 0x37  # strongest return
    packets["product"] = 0x22  # VLP-16
    return [(int(s), p.tobytes()) for s, p in zip(stamps, packets, strict=True)]


def bad_flag(packet: bytes, block: int = 5) -> bytes:
    data = bytearray(packet)
    data[block * 100 : block * 100 + 2] = b"\xee\xff"
    return bytes(data)


def check_sphere_sweep(points: np.ndarray) -> None:
    """A decoded full rotation of `vlp16_packets`: geometry, laser order, azimuth coverage."""
    assert points.dtype == np.float32 and points.shape[1] == 4
    expected = 360.0 / (RPM * 6.0 * BLOCK_US * 1e-6) * 32  # returns in one rotation
    assert abs(len(points) - expected) < 2 * 384  # whole packets of 384 returns
    x, y, z, intensity = points.T.astype(np.float64)
    xy = np.hypot(x, y)
    elev = np.degrees(np.arctan2(z, xy))
    laser = np.abs(elev[:, None] - ELEVATIONS[None, :]).argmin(axis=1)
    e = np.radians(ELEVATIONS[laser])
    # The bundled VLP-16 calibration applies the manual's per-laser vertical offsets
    # (up to 11.2 mm), so z differs from the ideal sphere by that much; xy does not.
    np.testing.assert_allclose(xy, RADIUS_M * np.cos(e), atol=0.005)
    np.testing.assert_allclose(z, RADIUS_M * np.sin(e), atol=0.015)
    np.testing.assert_array_equal(intensity, laser_intensity(laser))
    counts = np.bincount(laser, minlength=16)
    assert (counts == counts[0]).all(), counts
    azimuth = np.degrees(np.arctan2(y, x)) % 360.0
    assert (np.histogram(azimuth, bins=72, range=(0, 360))[0] > 0).all()


# --------------------------------------------------------------------------- packets


def test_packet_checks_catch_size_and_flags() -> None:
    _, good = vlp16_packets(0.1)[0]
    assert packet_problem(good) is None
    assert "600 bytes" in str(packet_problem(good[:600]))
    problem = packet_problem(bad_flag(good, block=7))
    assert problem is not None and "block 7" in problem


def test_model_names() -> None:
    assert parse_model("VLP-16") is parse_model("vlp16")
    assert parse_model(None) is None
    with pytest.raises(ValueError, match="VLP-99"):
        parse_model("VLP-99")
    # The config module checks names without loading velodyne-decoder: its list is the library's.
    assert sorted(MODELS) == sorted(vd.Model.__members__)
    with pytest.raises(ValueError, match=r"model: .*unknown Velodyne model 'VLP-99'"):
        make_source(Modality.LIDAR, parse_source(Modality.LIDAR, {"backend": "velodyne", "model": "VLP-99"}))


# --------------------------------------------------------------------------- live UDP


def send(address: tuple[str, int], payloads: list[bytes]) -> None:
    """Send over loopback at a fraction of the sensor's 754 packets/s burst, so no buffer overflows."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        for k, payload in enumerate(payloads):
            sock.sendto(payload, address)
            if k % 8 == 7:
                time.sleep(0.002)


def test_live_source_decodes_sweeps_and_skips_bad_packets() -> None:
    packets = vlp16_packets(2.3)
    payloads = [p for _, p in packets]
    # Malformed packets in mid-sweep: short, oversized, and one with a corrupted block flag.
    payloads[30:30] = [payloads[30][:512], payloads[30] + b"\0" * 10, bad_flag(payloads[30])]
    source = VelodyneSource(VelodyneConfig(port=0, timeout_s=5.0, sensor_id="top"))
    with source:
        before = time.monotonic()
        send(source.address, payloads)
        first = source.read(timeout=5.0)
        second = source.read(timeout=5.0)
        after = time.monotonic()
    assert first.modality is Modality.LIDAR and first.sensor_id == "top"
    assert (first.index, second.index) == (0, 1)
    check_sphere_sweep(first.data)
    check_sphere_sweep(second.data)
    assert before < first.timestamp < second.timestamp < after
    assert source.stats.errors["bad_packet"] == 3
    assert source.stats.frames == 2  # the last 0.3 turn never completes a sweep


def test_live_source_reconnects_after_silence_on_the_same_port() -> None:
    source = VelodyneSource(VelodyneConfig(port=0, timeout_s=0.5))
    with source:
        address = source.address
        deadline = time.monotonic() + 5.0
        while source.stats.reconnects == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert source.stats.errors["device_lost"] >= 1
        assert source.stats.reconnects >= 1
        assert source.address == address
        send(address, [p for _, p in vlp16_packets(1.3)])
        check_sphere_sweep(source.read(timeout=5.0).data)


def test_live_source_fails_at_open_naming_a_missing_calibration(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yml"
    source = VelodyneSource(VelodyneConfig(port=0, calibration=str(missing)))
    with pytest.raises(SourceError, match=r"nope\.yml"):
        source.open()


# --------------------------------------------------------------------------- pcap


def _checksum(header: bytes) -> int:
    total = sum(struct.unpack(f"!{len(header) // 2}H", header))
    total = (total & 0xFFFF) + (total >> 16)
    return ~(total + (total >> 16)) & 0xFFFF


def udp_frame(payload: bytes, *, port: int = 2368) -> bytes:
    """Ethernet + IPv4 + UDP around `payload`, as the sensor sends it (192.168.1.201 -> broadcast)."""
    udp = struct.pack("!HHHH", 2368, port, 8 + len(payload), 0) + payload
    src, dst = bytes([192, 168, 1, 201]), bytes([255, 255, 255, 255])
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0, 0x4000, 64, 17, 0, src, dst)
    ip = ip[:10] + struct.pack("!H", _checksum(ip)) + ip[12:]
    eth = b"\xff" * 6 + bytes.fromhex("60765c000001") + b"\x08\x00"
    return eth + ip + udp


def write_pcap(path: Path, records: list[tuple[float, bytes]]) -> None:
    """A classic libpcap file (Ethernet link type) of (capture time, link-layer frame) records."""
    with path.open("wb") as f:
        f.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))
        for t, frame in records:
            sec, usec = int(t), round((t - int(t)) * 1e6)
            f.write(struct.pack("<IIII", sec, usec, len(frame), len(frame)) + frame)


T0 = 1_700_000_000.0


def capture(rotations: float) -> tuple[list[tuple[float, bytes]], list[int]]:
    """pcap records of `rotations` turns (host time follows the device clock) and the device stamps."""
    packets = vlp16_packets(rotations)
    records = [(T0 + (s - packets[0][0]) * 1e-6, udp_frame(p)) for s, p in packets]
    return records, [s for s, _ in packets]


def test_pcap_source_decodes_sweeps_skips_bad_packets_and_other_traffic(tmp_path: Path) -> None:
    records, stamps = capture(2.3)
    t_mid = records[40][0]
    records[40:40] = [
        (t_mid, udp_frame(records[40][1][42:][:700])),  # truncated data packet
        (t_mid, udp_frame(bad_flag(records[40][1][42:]))),
        (t_mid, udp_frame(b"\0" * 512, port=8308)),  # position packet: not LiDAR data
        (t_mid, b"\xff" * 6 + b"\x00" * 6 + b"\x08\x06" + b"\0" * 28),  # ARP
    ]
    path = tmp_path / "vlp16.pcap"
    write_pcap(path, records)
    source = PcapSource(PcapConfig(path=str(path)))
    with source:
        frames = list(source)
    assert [f.index for f in frames] == [0, 1]
    for frame in frames:
        check_sphere_sweep(frame.data)
    rotation = 60.0 / RPM
    packet_s = 12 * BLOCK_US * 1e-6
    assert frames[0].timestamp == pytest.approx(rotation, abs=2 * packet_s)
    assert frames[1].timestamp - frames[0].timestamp == pytest.approx(rotation, abs=2 * packet_s)
    assert frames[0].wall_time == pytest.approx(T0 + frames[0].timestamp)
    assert source.stats.errors == {"bad_packet": 2, "partial_sweep": 1}  # the 0.3 turn at the end
    assert source.packets == len(stamps) + 2


def test_pcap_source_keeps_sweeps_before_a_truncated_end(tmp_path: Path) -> None:
    records, _ = capture(2.3)
    path = tmp_path / "cut.pcap"
    write_pcap(path, records)
    data = path.read_bytes()
    path.write_bytes(data[:-1500])  # cut inside the last record's header or body
    with PcapSource(PcapConfig(path=str(path))) as source:
        frames = list(source)
    assert len(frames) == 2
    assert sum(source.stats.errors.values()) >= 1


def test_pcap_source_with_the_wrong_model_counts_decode_errors_and_ends(tmp_path: Path) -> None:
    records, _ = capture(1.5)
    path = tmp_path / "vlp16.pcap"
    write_pcap(path, records)
    source = PcapSource(PcapConfig(path=str(path), model="HDL-32E"))
    with source, pytest.raises(EndOfStream):
        source.read()
    assert source.stats.errors["decode_error"] >= 1


def test_pcap_source_fails_at_open_naming_missing_or_garbage_files(tmp_path: Path) -> None:
    missing = tmp_path / "missing.pcap"
    with pytest.raises(SourceError, match=r"missing\.pcap"):
        PcapSource(PcapConfig(path=str(missing))).open()
    garbage = tmp_path / "garbage.pcap"
    garbage.write_bytes(np.random.default_rng(0).bytes(4000))
    with pytest.raises(SourceError, match=r"garbage\.pcap"):
        PcapSource(PcapConfig(path=str(garbage))).open()


def test_pcap_config_rejects_unknown_models() -> None:
    with pytest.raises(ValueError, match="VLP-99"):
        PcapConfig(path="x.pcap", model="VLP-99")


def test_probe_pcap_reports_sweeps_packets_and_model(tmp_path: Path) -> None:
    records, stamps = capture(3.15)  # the last 0.15 turn is a fragment even at 1200 rpm
    path = tmp_path / "vlp16.pcap"
    write_pcap(path, records)
    report = probe_pcap(path)
    assert report.backend == "pcap" and report.modality is Modality.LIDAR
    assert report.frames == 3
    assert report.details["packets"] == len(stamps)
    assert report.details["model"] == "VLP-16"
    assert report.end - report.start == pytest.approx(2 * 60.0 / RPM, abs=0.005)


def test_pcap_frame_clock_does_not_wrap_when_the_sensor_clock_does(tmp_path: Path) -> None:
    packets = vlp16_packets(2.3, start_us=HOUR_US - 150_000)  # the sensor clock wraps after 0.15 s
    path = tmp_path / "wrap.pcap"
    write_pcap(path, [(T0 + (s - packets[0][0]) * 1e-6, udp_frame(p)) for s, p in packets])
    with PcapSource(PcapConfig(path=str(path))) as source:
        frames = list(source)
    assert len(frames) == 2
    rotation, packet_s = 60.0 / RPM, 12 * BLOCK_US * 1e-6
    assert frames[1].timestamp - frames[0].timestamp == pytest.approx(rotation, abs=2 * packet_s)
