"""Ingest cost of robot logs on ONE core: the `rosbag` backend on ROS 1, ROS 2 sqlite3 and MCAP
against the Arrow `recording` backend, on the same frames.

The frames are the live simulated rig's (configs/pipeline/sim-local.yaml: camera 320x240 RGB at
30 Hz, microphone 16 kHz in 50 ms chunks, LiDAR 16 x 900 rays at 10 Hz), recorded for
`--seconds` of scene time, stamped on whole nanoseconds (what a ROS stamp holds), then written as
an Arrow recording and as a ROS 1 bag, a ROS 2 bag with sqlite3 storage, a ROS 2 bag with mcap
storage and that bag's .mcap file alone, by the writer the tests use
(`tests/sensors/rosbag_fixtures.write_bag`: sensor_msgs/Image rgb8, PointCloud2 x/y/z/intensity
float32, audio_common_msgs/AudioDataStamped F32LE). Ingest is what a sensor actor does per
frame: every sensor's source opened on the file and read to its end, the decoded Frames equal to
the recorded ones. Best of `--repeats` per format.

Reported: frames per second and real-time factor (seconds of recording per second of ingest,
all three sensors together), the ratio to the Arrow recording, and megabytes read per second.
The process is pinned to one CPU with every thread pool capped at one thread (as
benchmarks/sensors.py does).

Run: `.venv/bin/python benchmarks/rosbag_ingest.py` (about a minute); writes JSON to `--out`
(default docs/benchmarks/rosbag-ingest.json) and prints Markdown for docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.sensors import machine_info, pin_to_one_core  # noqa: E402
from fusion.sample import Frame, Modality  # noqa: E402
from fusion.sensors import make_source, parse_source  # noqa: E402
from tests.sensors.rosbag_fixtures import TOPICS, Kind, record_sim, write_bag  # noqa: E402

RIG = {
    "cam0": {
        "modality": "camera",
        "source": {"backend": "simulated", "rate_hz": 30, "width": 320, "height": 240},
    },
    "mic0": {
        "modality": "microphone",
        "source": {"backend": "simulated", "rate_hz": 20, "sample_rate": 16000},
    },
    "lidar0": {"modality": "lidar", "source": {"backend": "simulated", "rate_hz": 10}},
}


def source_configs(kind: str, path: Path) -> dict[str, tuple[Modality, dict[str, Any]]]:
    modalities = {sid: Modality(spec["modality"]) for sid, spec in RIG.items()}
    if kind == "arrow":
        return {sid: (m, {"backend": "recording", "path": str(path)}) for sid, m in modalities.items()}
    return {
        sid: (m, {"backend": "rosbag", "path": str(path), "topic": TOPICS[sid]})
        for sid, m in modalities.items()
    }


def ingest(kind: str, path: Path, expected: dict[str, list[Frame]]) -> tuple[float, int]:
    """(seconds, frames) to read every sensor of `path` to its end; checks the frames."""
    frames = 0
    t0 = time.perf_counter()
    for sid, (modality, cfg) in source_configs(kind, path).items():
        src = make_source(
            modality,
            parse_source(modality, {**cfg, "sensor_id": sid}, source=f"{kind}.{sid}"),
            source=f"{kind}.{sid}",
        )
        with src:
            got = list(src)
        frames += len(got)
        want = expected[sid]
        assert len(got) == len(want), (kind, sid, len(got), len(want))
        assert got[-1].timestamp == want[-1].timestamp and np.array_equal(got[-1].data, want[-1].data), (
            kind,
            sid,
        )
    return time.perf_counter() - t0, frames


def size_mb(path: Path) -> float:
    files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
    return sum(p.stat().st_size for p in files) / 1e6


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=20.0, help="scene time recorded (default 20)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--cpu", type=int, default=None, help="the CPU to pin to (default: the last)")
    parser.add_argument("--out", type=Path, default=ROOT / "docs/benchmarks/rosbag-ingest.json")
    args = parser.parse_args()
    cpu = pin_to_one_core(args.cpu)
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        frames = record_sim(d / "arrow", args.seconds, RIG)
        span = max(f.end_time for fs in frames.values() for f in fs) - min(
            f.timestamp for fs in frames.values() for f in fs
        )
        paths = {"arrow": d / "arrow"}
        for kind, label in ((Kind.ROS1, "ROS 1 bag"), (Kind.SQLITE3, "ROS 2 sqlite3"), (Kind.MCAP, "ROS 2 mcap"),
                            (Kind.MCAP_FILE, "MCAP file")):  # fmt: skip
            paths[label] = write_bag(d / kind.value, kind, frames)
        rows = []
        for label, path in paths.items():
            kind = "arrow" if label == "arrow" else "rosbag"
            best, count = min(ingest(kind, path, frames) for _ in range(args.repeats))
            rows.append({"format": "Arrow recording" if label == "arrow" else label, "frames": count,
                         "seconds": best, "frames_per_s": count / best, "realtime_factor": span / best,
                         "mb": size_mb(path), "mb_per_s": size_mb(path) / best})  # fmt: skip
    base = rows[0]["seconds"]
    for row in rows:
        row["vs_arrow"] = row["seconds"] / base
    result = {
        "seconds_recorded": span,
        "rows": rows,
        "machine": machine_info(cpu),
        "args": vars(args) | {"out": str(args.out)},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(
        f"{rows[0]['frames']} frames, {span:.1f} s of recording (camera 320x240 at 30 Hz, mic 16 kHz, LiDAR 10 Hz); one core"
    )
    print("| format | size (MB) | ingest (s) | frames/s | real-time factor | time vs Arrow | MB/s |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in rows:
        print(f"| {r['format']} | {r['mb']:.0f} | {r['seconds']:.2f} | {r['frames_per_s']:.0f} | "
              f"{r['realtime_factor']:.0f}x | {r['vs_arrow']:.2f} | {r['mb_per_s']:.0f} |")  # fmt: skip
    print(json.dumps(result["machine"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
