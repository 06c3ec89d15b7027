"""What handing a frame from one actor to another costs: a Ray actor call against the local link.

Two actors on this machine, as a sensor and its fuser: the sender hands `--count` frames at
`--rate` per second to the receiver, (1) as Ray actor calls (`receiver.push.remote(frames)`,
at most 4 in flight, as `SensorActor` streams across hosts) and (2) over the local link
(`pipelines.local_link`, as on one host), for a small payload and a 320x240 camera frame.
Measured in one run, side by side: CPU time per hand-over in each process (from /proc, so
every thread counts, Ray's included) and the latency from send to the receiver's handler.

Run: `.venv/bin/python benchmarks/ray_calls.py` (about 1 minute). Markdown on stdout.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import ray

from fusion.sample import Frame, Modality
from pipelines.cluster import INLINE_OBJECT_BYTES
from pipelines.local_link import FrameClient, FrameServer

TICK = os.sysconf("SC_CLK_TCK")


def cpu_s() -> float:
    """CPU seconds of this whole process (every thread)."""
    fields = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def frame(nbytes: int) -> Frame:
    data = np.zeros((max(1, nbytes // 960), 320, 3), np.uint8)  # a camera image of about nbytes
    return Frame(modality=Modality.CAMERA, sensor_id="cam0", timestamp=0.0, wall_time=time.time(), data=data)


@ray.remote
class Receiver:
    def __init__(self) -> None:
        self.latencies: list[float] = []
        self.server = FrameServer(self.push, name="bench")

    def path(self) -> str:
        return self.server.path

    def push(self, frames: list[Frame]) -> None:
        self.latencies.append(time.time() - frames[0].wall_time)

    def take(self) -> tuple[float, list[float]]:
        out, self.latencies = self.latencies, []
        return cpu_s(), out


@ray.remote
class Sender:
    def run(self, receiver: Any, path: str | None, count: int, rate: float, nbytes: int) -> float:
        """Hand `count` frames over; returns this process's CPU seconds spent doing it."""
        client = FrameClient(path) if path else None
        in_flight: list[Any] = []
        start_cpu, t0 = cpu_s(), time.time()
        for i in range(count):
            time.sleep(max(0.0, t0 + i / rate - time.time()))
            frames = [frame(nbytes)]
            if client is not None:
                client.send(frames)
                continue
            in_flight.append(receiver.push.remote(frames))
            _, in_flight = ray.wait(in_flight, num_returns=len(in_flight), timeout=0)
            if len(in_flight) >= 4:
                _, in_flight = ray.wait(in_flight, num_returns=len(in_flight) - 3)
        ray.get(in_flight)
        used = cpu_s() - start_cpu
        if client is not None:
            client.close()
        return used


def measure(transport: str, nbytes: int, count: int, rate: float) -> dict[str, float]:
    receiver, sender = Receiver.remote(), Sender.remote()
    path = ray.get(receiver.path.remote()) if transport == "local link" else None
    ray.get(sender.run.remote(receiver, path, 20, rate, nbytes))  # warm both ends up
    before, _ = ray.get(receiver.take.remote())
    sent_cpu = ray.get(sender.run.remote(receiver, path, count, rate, nbytes))
    time.sleep(0.2)  # the last frames reach the receiver's handler
    after, latencies = ray.get(receiver.take.remote())
    ray.kill(receiver)
    ray.kill(sender)
    return {
        "sender_ms": sent_cpu / count * 1e3,
        "receiver_ms": (after - before) / count * 1e3,
        "latency_p50_ms": statistics.median(latencies) * 1e3,
        "latency_p90_ms": sorted(latencies)[int(0.9 * len(latencies))] * 1e3,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=300)
    parser.add_argument("--rate", type=float, default=60.0, help="hand-overs per second")
    args = parser.parse_args()
    ray.init(
        num_cpus=4,
        include_dashboard=False,
        configure_logging=False,
        _system_config={"max_direct_call_object_size": INLINE_OBJECT_BYTES},  # as the pipeline
    )
    rows = []
    for nbytes in (960, 230400):
        for transport in ("Ray call", "local link"):
            r = measure(transport, nbytes, args.count, args.rate)
            print(f"{transport} {nbytes} B: {r}", file=sys.stderr, flush=True)
            rows.append((transport, nbytes, r))
    ray.shutdown()
    print(f"Load average at the end: {os.getloadavg()}; {args.count} hand-overs at {args.rate:g}/s each.\n")
    print(
        "| transport | payload | sender CPU ms / hand-over | receiver CPU ms / hand-over | latency p50 ms | p90 ms |"
    )
    print("|---|---:|---:|---:|---:|---:|")
    for transport, nbytes, r in rows:
        print(
            f"| {transport} | {nbytes / 1000:g} kB | {r['sender_ms']:.2f} | {r['receiver_ms']:.2f} "
            f"| {r['latency_p50_ms']:.2f} | {r['latency_p90_ms']:.2f} |"
        )


if __name__ == "__main__":
    main()
