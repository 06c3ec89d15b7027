"""Velodyne LiDAR: a pcap capture of data packets (`pcap`) or a live sensor on UDP (`velodyne`).

Both decode packets with velodyne-decoder (`fusion.sensors.velodyne.packets`) into one Frame
per full sweep.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path

import velodyne_decoder as vd

from fusion.errors import InputError, SourceError
from fusion.sample import Frame, Modality
from fusion.sensors.registry import FileReport, register_probe
from fusion.sensors.source import LiveSource
from fusion.sensors.sweeps import RawSweep, SweepFileSource, finite_sweep
from fusion.sensors.velodyne.config import PCAP, VELODYNE, PcapConfig, VelodyneConfig
from fusion.sensors.velodyne.packets import (
    PACKET_SIZE,
    Sweep,
    VelodyneStream,
    decoder_config,
    iter_udp,
    open_pcap,
    packet_problem,
    product_name,
)


class PcapSource(SweepFileSource):
    """Full sweeps from a pcap of Velodyne data packets (UDP to `port`; other traffic is ignored).

    Frame.timestamp is the capture time of the packet that completed the sweep, in seconds
    since the first data packet of the file; Frame.wall_time is that capture time in Unix
    seconds.
    """

    backend = PCAP
    config: PcapConfig

    def __init__(self, config: PcapConfig, *, modality: Modality | None = None) -> None:
        super().__init__(config, modality=modality)
        self.path = Path(config.path)
        self.packets = 0  # data packets read (to `port`), good or bad
        self.model = "unknown"  # the model named by the first good packet's product id
        self._decoder_config = vd.Config()

    def _prepare(self) -> None:
        if not self.path.is_file():
            raise SourceError(f"pcap file not found: {self.path}")
        self._decoder_config = decoder_config(self.config.model, self.config.calibration)
        f, _ = open_pcap(self.path)  # not a capture: fail here, naming the file
        f.close()
        self.packets = 0

    def _packets(self) -> Iterator[tuple[float, bytes]]:
        try:
            yield from iter_udp(self.path, self.config.port)
        except ValueError as err:  # a capture cut off mid-record: keep what came before
            self.skip("decode_error", str(err))

    def _sweeps(self) -> Iterator[RawSweep]:
        stream = VelodyneStream(self._decoder_config, rpm=self.config.rpm, skip=self.skip)
        start: float | None = None
        index = 0
        for stamp, packet in self._packets():
            self.packets += 1
            start = stamp if start is None else start
            if self.model == "unknown" and packet_problem(packet) is None:
                self.model = product_name(packet)
            sweep = stream.feed(stamp, packet)
            if sweep is not None:
                yield self._sweep(index, sweep, start)
                index += 1
        sweep = stream.finish()
        if sweep is not None and start is not None:
            yield self._sweep(index, sweep, start)

    def _sweep(self, index: int, sweep: Sweep, start: float) -> RawSweep:
        where = f"{self.path} sweep {index}"
        return RawSweep(index, sweep.host_time - start, sweep.points, where, wall_time=sweep.host_time)


class VelodyneSource(LiveSource):
    """A live Velodyne sensor: UDP data packets on `host:port`, one Frame per full sweep.

    A background thread receives packets, drops malformed ones ("bad_packet": wrong size, or
    a firing block not starting with the flag bytes FF EE) before they reach velodyne-decoder, and pushes
    each completed sweep. Frame.timestamp is `time.monotonic()` when the packet that
    completed the sweep arrived (so the sweep's points were captured during the preceding
    1 / (rpm / 60) s).

    No packet for `timeout_s` counts as a lost device ("device_lost"): the socket is reopened
    on the same port and the partial sweep is dropped.
    """

    backend = VELODYNE
    config: VelodyneConfig

    poll_s = 0.1  # longest a receive blocks, so close() is noticed promptly

    def __init__(self, config: VelodyneConfig, *, modality: Modality | None = None) -> None:
        super().__init__(config, modality=modality)
        self._sock: socket.socket | None = None
        self._port = config.port
        self._stream: VelodyneStream | None = None
        self._last_packet = 0.0
        self._index = 0

    @property
    def address(self) -> tuple[str, int]:
        """The (host, port) listened on: the bound port when the config asked for port 0."""
        return self.config.host, self._port

    def _connect(self) -> None:
        vd_config = decoder_config(self.config.model, self.config.calibration)
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        # ~750 packets/s arrive whether or not we keep up: a deep kernel buffer absorbs stalls.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        try:
            sock.bind((self.config.host, self._port))
        except OSError as err:
            sock.close()
            raise SourceError(
                f"cannot listen for Velodyne packets on {self.config.host}:{self._port}: {err}"
            ) from None
        sock.settimeout(self.poll_s)
        self._port = sock.getsockname()[1]  # a reconnect keeps the port the sensor sends to
        self._sock = sock
        self._stream = VelodyneStream(vd_config, rpm=self.config.rpm, skip=self.skip)
        self._last_packet = time.monotonic()

    def _capture(self) -> Frame | None:
        sock, stream = self._sock, self._stream
        if sock is None or stream is None:
            raise SourceError(f"Velodyne socket on {self.config.host}:{self._port} is closed")
        try:
            packet = sock.recv(2 * PACKET_SIZE)
        except TimeoutError:
            silent = time.monotonic() - self._last_packet
            if silent > self.config.timeout_s:
                raise SourceError(
                    f"no Velodyne packet on {self.config.host}:{self._port} for {silent:.1f} s"
                ) from None
            return None
        now, wall = time.monotonic(), time.time()
        self._last_packet = now
        sweep = stream.feed(now, packet)
        if sweep is None:
            return None
        index = self._index
        self._index += 1
        points = finite_sweep(self, sweep.points, f"sweep {index}")
        if points is None:
            return None
        return Frame(
            modality=Modality.LIDAR,
            sensor_id=self.sensor_id,
            timestamp=sweep.host_time,
            wall_time=wall,
            data=points,
            index=index,
        )

    def _disconnect(self) -> None:
        sock, self._sock = self._sock, None
        if sock is not None:
            sock.close()


@register_probe(lambda p: p.is_file() and p.suffix.lower() in (".pcap", ".pcapng"))
def probe_pcap(path: Path) -> FileReport:
    """Sweeps, data packets, sensor model and time span of a Velodyne pcap (decodes it all)."""
    # The model comes from the packets; the top rpm makes only true fragments count as partial.
    source = PcapSource(PcapConfig(path=str(path), model=None, rpm=1200.0))
    try:
        source.open()
    except SourceError as err:
        raise InputError(str(err)) from None
    stamps = [frame.timestamp for frame in source]
    source.close()
    return FileReport(
        path=str(path),
        modality=Modality.LIDAR,
        backend="pcap",
        frames=len(stamps),
        start=stamps[0] if stamps else 0.0,
        end=stamps[-1] if stamps else 0.0,
        shapes="N x 4 float32",
        details={
            "sweeps": len(stamps),
            "packets": source.packets,
            "model": source.model,
            "errors": dict(source.stats.errors),
        },
    )
