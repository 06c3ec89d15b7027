"""Velodyne packet handling shared by the `pcap` and live `velodyne` LiDAR sources.

Decoding (calibration, firing timings, azimuth interpolation) is velodyne-decoder's; this
module checks packets before they reach it, reads UDP payloads out of pcap captures, and
turns the decoder's completed sweeps into [N, 4] points stamped with the host clock.

Data packet layout (VLP-16 / HDL-32E / VLP-32 user manuals): 1206 bytes of UDP payload,
12 firing blocks of 100 bytes (flag bytes FF EE, i.e. 0xEEFF read little-endian; azimuth
uint16 in 0.01 degree; 32 returns of uint16 distance + uint8 intensity), then a uint32
timestamp in microseconds past the top of the hour, a return-mode byte and a product-id byte.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dpkt
import numpy as np
import velodyne_decoder as vd

from fusion.errors import InputError, SourceError
from fusion.sensors.velodyne.config import model_name

PACKET_SIZE = vd.PACKET_SIZE  # 1206
BLOCK_FLAG = 0xEEFF  # bytes FF EE at the start of every firing block
_BLOCKS = 12
_BLOCK_SIZE = 100

# Product-id byte (last byte of a data packet) -> model, from the Velodyne user manuals.
# HDL-64E leaves it unset, so a capture from one is reported as "unknown".
PRODUCT_IDS: dict[int, str] = {
    0x21: "HDL-32E",
    0x22: "VLP-16",
    0x23: "VLP-32A/B",
    0x24: "Puck Hi-Res",
    0x28: "VLP-32C",
    0x31: "Velarray",
    0xA1: "VLS-128",
}


def parse_model(name: str | None) -> vd.Model | None:
    """The velodyne-decoder model for a name like "VLP-16"; None (detect from packets) for None;
    InputError naming the known models for a name it does not know."""
    model = model_name(name)
    return None if model is None else vd.Model.__members__[model]


def decoder_config(model: str | None, calibration: str | None) -> vd.Config:
    """A velodyne-decoder Config; a calibration file that is missing or unreadable fails naming it."""
    calib = None
    if calibration is not None:
        path = Path(calibration)
        if not path.is_file():
            raise SourceError(f"Velodyne calibration file not found: {path}")
        try:
            calib = vd.Calibration.read(str(path))
        except (RuntimeError, ValueError) as err:
            raise SourceError(f"{path}: not a Velodyne calibration file: {err}") from None
    return vd.Config(model=parse_model(model), calibration=calib)


def packet_problem(packet: bytes) -> str | None:
    """What is wrong with a data packet, or None when its size and block flags are right.

    The decoder drops the rest of a packet at the first bad block flag but still lets its
    azimuth steer sweep splitting, so malformed packets are kept away from it altogether.
    """
    if len(packet) != PACKET_SIZE:
        return f"{len(packet)} bytes, expected {PACKET_SIZE}"
    flags = np.frombuffer(packet, dtype="<u2", count=_BLOCKS * _BLOCK_SIZE // 2)[:: _BLOCK_SIZE // 2]
    bad = np.flatnonzero(flags != BLOCK_FLAG)
    if bad.size:
        return f"block {bad[0]} starts with 0x{flags[bad[0]]:04X}, expected 0x{BLOCK_FLAG:04X}"
    return None


def product_name(packet: bytes) -> str:
    """The sensor model a data packet says it comes from ("unknown" when the id is not set)."""
    return PRODUCT_IDS.get(packet[-1], "unknown")


@dataclass(frozen=True)
class Sweep:
    """One full rotation from the decoder.

    Attributes:
        host_time: the host stamp given with the packet that completed the sweep.
        points: [N, 4] float32 x, y, z metres (ROS frame: x forward, y left, z up), intensity.
    """

    host_time: float
    points: np.ndarray


class VelodyneStream:
    """Raw data packets in, complete sweeps out; velodyne-decoder's StreamDecoder does the decoding.

    Bad input is reported through `skip(reason, detail)` (a Source's) and never raises:
    "bad_packet" for a wrong size or block flag, "decode_error" when the decoder refuses a
    sweep (e.g. packets from another model than configured), "partial_sweep" for a sweep
    spanning under half a rotation at `rpm` (the tail of a capture, or the fragment left by
    a gap in the stream): a fragment would show the model half a scene.
    """

    def __init__(self, config: vd.Config, *, rpm: float, skip: Callable[[str, str], None]) -> None:
        self._config = config
        self._decoder = vd.StreamDecoder(config)
        self._min_duration = 0.5 * 60.0 / rpm
        self._skip = skip

    def feed(self, host_time: float, packet: bytes) -> Sweep | None:
        """Take one packet received at `host_time`; the completed sweep when it ends one. Never blocks."""
        problem = packet_problem(packet)
        if problem is not None:
            self._skip("bad_packet", problem)
            return None
        return self._complete(lambda: self._decoder.decode(host_time, packet))

    def finish(self) -> Sweep | None:
        """The sweep still being assembled at the end of a capture, if it is a full one."""
        return self._complete(self._decoder.finish)

    def _complete(self, decode: Callable[[], Any]) -> Sweep | None:
        try:
            result = decode()
        except RuntimeError as err:
            # The decoder raises while decoding a whole sweep and keeps its packets: start over.
            self._decoder = vd.StreamDecoder(self._config)
            self._skip("decode_error", str(err))
            return None
        if result is None:
            return None
        stamp, cloud = result  # cloud: [N, 8] x, y, z, intensity, time, column, ring, return_type
        times = cloud[:, vd.PointField.time]  # seconds from the sweep stamp, device clock
        duration = float(times.max() - times.min()) if len(cloud) else 0.0
        if len(cloud) and duration < self._min_duration:
            self._skip("partial_sweep", f"sweep spans {duration:.3f} s, under half a rotation")
            return None
        return Sweep(
            host_time=float(stamp.host),
            points=np.ascontiguousarray(cloud[:, :4], dtype=np.float32),
        )


# Link-layer types of pcap captures that carry IPv4 -> how to peel them down to the IP packet.
_LINK_LAYERS = {
    dpkt.pcap.DLT_EN10MB: dpkt.ethernet.Ethernet,
    dpkt.pcap.DLT_LINUX_SLL: dpkt.sll.SLL,
    dpkt.pcap.DLT_RAW: dpkt.ip.IP,
    101: dpkt.ip.IP,  # LINKTYPE_RAW as written in files (DLT_RAW's value differs by platform)
}


def open_pcap(path: Path):
    """A dpkt reader for a pcap or pcapng file; SourceError naming the file when it is neither."""
    f = path.open("rb")
    try:
        reader = dpkt.pcap.UniversalReader(f)
    except ValueError as err:
        f.close()
        raise SourceError(f"{path}: not a pcap capture: {err}") from None
    if reader.datalink() not in _LINK_LAYERS:
        f.close()
        raise SourceError(f"{path}: unsupported pcap link type {reader.datalink()}")
    return f, reader


def iter_udp(path: Path, port: int) -> Iterator[tuple[float, bytes]]:
    """(capture time in Unix seconds, UDP payload) of every packet to `port` in a capture.

    Other traffic (ARP, the sensor's position packets on port 8308, ...) is not LiDAR data
    and is passed over. A capture cut off mid-record ends the iteration with ValueError.
    """
    f, reader = open_pcap(path)
    layer = _LINK_LAYERS[reader.datalink()]
    with f:
        try:
            for stamp, buf in reader:
                try:
                    ip = layer(buf)
                    while not isinstance(ip, dpkt.ip.IP) and hasattr(ip, "data"):
                        ip = ip.data
                except dpkt.UnpackError:
                    continue
                udp = ip.data if isinstance(ip, dpkt.ip.IP) else None
                if isinstance(udp, dpkt.udp.UDP) and udp.dport == port:
                    yield float(stamp), bytes(udp.data)
        except dpkt.UnpackError as err:
            raise InputError(f"{path}: capture ends mid-record: {err}") from None
