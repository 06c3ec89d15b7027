"""Sensor read + preprocessing cost on ONE core, and the cost of serializing what flows.

The target (from the issue): camera 30 Hz at 640x480 -> 64x64, audio at 16 kHz (1 s log-mel
windows at 10 Hz ticks) and LiDAR 10 Hz at ~30k points per sweep, preprocessed together on one
core with room to spare. Measured, per modality, on inputs this script writes into a temp dir:

* camera: a 640x480 MJPEG AVI (cv2.VideoWriter; a street-like scene with moving boxes and
  sensor noise) read by the `file` backend, then `CameraPreprocessor` to 64x64;
* microphone: a 16 kHz WAV (soundfile, PCM 16) read by the `file` backend in 50 ms chunks, and
  `MicrophonePreprocessor` on 1 s windows every 0.1 s (one tick = two chunks read + one window);
* LiDAR: KITTI-style .bin sweeps of ~30k points (a 32-beam ray cast of a ground plane and
  boxes within 50 m, reflectance in [0, 1]) read by the `kitti` backend, then
  `LidarPreprocessor` (voxel 0.2 m, 1024 points).

"Fraction of one core" is CPU seconds per frame (process CPU time, all threads) times the
sensor rate; headroom is 1 minus the sum over modalities. Wall-clock times are shown too: they
match CPU time on an idle core and grow when other work shares it (see the load average).
The process is pinned to one CPU, and BLAS / OpenMP / OpenCV / Arrow / torch thread pools are
limited to one thread, so no modality borrows a second core.

A second table gives the simulated sources' rendering cost (what `backend: simulated` adds;
a real rig does not pay it). A third compares serialization throughput with a plain memory
copy of the same bytes (the ceiling): `fusion.schema.serialize_sample` of a model-ready
FusedSample, and a Frame of each modality as an Arrow IPC stream (the same route,
`frames_to_table` + one IPC stream), plus `deserialize_sample`.

Run: `.venv/bin/python benchmarks/sensors.py` (about a minute); `--quick` for a smoke run
under 30 s. Prints Markdown and machine facts; writes JSON to `--out`
(default docs/benchmarks/sensors.json).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pyarrow as pa
import pyarrow.ipc as ipc
import soundfile as sf
from threadpoolctl import threadpool_info, threadpool_limits

from fusion.sample import Frame, FusedSample, Modality, Segment
from fusion.schema import deserialize_sample, frames_to_table, serialize_sample
from fusion.sensors import EndOfStream, Source, make_source, parse_source
from fusion.sensors.audio import MicrophoneFileConfig, MicrophoneFileSource
from fusion.sensors.opencv import CameraFileConfig, CameraFileSource
from fusion.sensors.pointclouds import KittiConfig, KittiSource
from fusion.sensors.preprocess_config import (
    CameraPreprocessConfig,
    LidarPreprocessConfig,
    MicrophonePreprocessConfig,
)
from fusion.sensors.preprocessors import CameraPreprocessor, LidarPreprocessor, MicrophonePreprocessor

CAMERA_HZ, AUDIO_TICK_HZ, LIDAR_HZ = 30.0, 10.0, 10.0
CAMERA_W, CAMERA_H, MODEL_SIDE = 640, 480, 64
SAMPLE_RATE, CHUNK_S = 16000, 0.05
CHUNKS_PER_TICK = round(1 / (AUDIO_TICK_HZ * CHUNK_S))  # 2: 0.1 s of audio per tick
LIDAR_BEAMS, LIDAR_STEPS = 32, 1150  # ~30k returns per sweep after sky and dropouts
LIDAR_HEIGHT_M = 1.73  # sensor above the ground, as on the KITTI car
SIM_LIDAR_HZ, SIM_MIC_HZ = 10.0, 20.0


@dataclass(frozen=True)
class Plan:
    """How much input to write and how long to time each serialization."""

    video_frames: int
    audio_s: float
    sweeps: int
    sim_frames: int  # per simulated camera / LiDAR; the microphone renders 2x as many chunks
    min_time_s: float  # per serialization measurement
    warmup: int  # untimed calls first (lazy imports, caches, page cache)


FULL = Plan(video_frames=150, audio_s=20.0, sweeps=50, sim_frames=60, min_time_s=1.0, warmup=3)
QUICK = Plan(video_frames=12, audio_s=2.0, sweeps=4, sim_frames=5, min_time_s=0.1, warmup=1)


def progress(message: str) -> None:
    print(f"[sensors] {message}", file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------- one core


def pin_to_one_core(cpu: int | None) -> int:
    """Pin this process to one CPU (default: the last one it may use) and cap thread pools at one."""
    allowed = sorted(os.sched_getaffinity(0))
    chosen = allowed[-1] if cpu is None else cpu
    if chosen not in allowed:
        raise SystemExit(f"--cpu {chosen}: not one of this process's CPUs {allowed}")
    os.sched_setaffinity(0, {chosen})
    # Libraries loaded later (scipy's BLAS and numba through librosa's lazy imports) read these
    # when they load; FFmpeg reads the last when a capture opens.
    for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
        os.environ[name] = "1"
    os.environ["OPENCV_FFMPEG_CAPTURE_OPTIONS"] = "threads;1"
    threadpool_limits(1)  # the BLAS / OpenMP pools already loaded (numpy, open3d)
    cv2.setNumThreads(1)
    pa.set_cpu_count(1)
    pa.set_io_thread_count(1)
    try:
        import torch  # not on this path; capped in case a preprocessor ever uses it
    except ImportError:
        pass
    else:
        torch.set_num_threads(1)
    return chosen


@dataclass
class Times:
    """Per-call wall and CPU seconds."""

    wall: list[float]
    cpu: list[float]

    @classmethod
    def empty(cls) -> Times:
        return cls([], [])

    def add(self, wall: float, cpu: float) -> None:
        self.wall.append(wall)
        self.cpu.append(cpu)

    def summary(self) -> dict[str, float]:
        return {
            "calls": len(self.wall),
            "wall_mean_ms": 1e3 * statistics.fmean(self.wall),
            "wall_median_ms": 1e3 * statistics.median(self.wall),
            "cpu_mean_ms": 1e3 * statistics.fmean(self.cpu),
        }


def timed(fn: Callable[[], Any], times: Times) -> Any:
    w0, c0 = time.perf_counter(), time.process_time()
    out = fn()
    times.add(time.perf_counter() - w0, time.process_time() - c0)
    return out


def per_call(fn: Callable[[], Any], *, min_time_s: float) -> Times:
    """Seconds per call of a fast `fn`, timed in batches of >= 2 ms so clock overhead is noise."""
    fn()
    batch = 1
    while True:
        w0 = time.perf_counter()
        for _ in range(batch):
            fn()
        if time.perf_counter() - w0 >= 2e-3:
            break
        batch *= 2
    times = Times.empty()
    end = time.perf_counter() + min_time_s
    while time.perf_counter() < end or len(times.wall) < 5:
        w0, c0 = time.perf_counter(), time.process_time()
        for _ in range(batch):
            fn()
        times.add((time.perf_counter() - w0) / batch, (time.process_time() - c0) / batch)
    return times


# ----------------------------------------------------------------------------- inputs


def camera_image(k: int, rng: np.random.Generator) -> np.ndarray:
    """Frame k of a street-like scene: sky and road gradients, lane marks, three boxes driving
    across, sensor noise. [480, 640, 3] uint8 BGR (as OpenCV writes it)."""
    rows = np.linspace(0.0, 1.0, CAMERA_H, dtype=np.float32)[:, None, None]  # (H, 1, 1)
    sky = (1 - rows) * np.array([235, 200, 150], np.float32) + rows * np.array([250, 240, 225], np.float32)
    road = rows * np.array([70, 75, 80], np.float32) + (1 - rows) * np.array([110, 110, 110], np.float32)
    img = np.where(rows < 0.5, sky, road) * np.ones((1, CAMERA_W, 1), np.float32)  # (H, W, 3)
    for lane in range(8):
        x = (lane * 90 + 12 * k) % CAMERA_W
        cv2.rectangle(img, (x, 400), (x + 40, 410), (230, 230, 230), -1)
    for i, (color, speed) in enumerate((((40, 40, 200), 9), ((200, 90, 60), -6), ((60, 160, 60), 4))):
        x = (100 + 200 * i + speed * k) % (CAMERA_W + 120) - 120
        cv2.rectangle(img, (x, 220 + 40 * i), (x + 120, 300 + 50 * i), color, -1)
    img += rng.normal(0.0, 4.0, img.shape).astype(np.float32)
    return np.clip(img, 0, 255).astype(np.uint8)


def write_video(path: Path, frames: int) -> Path:
    """A 640x480 MJPEG AVI at 30 fps of `camera_image` frames."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), CAMERA_HZ, (CAMERA_W, CAMERA_H))
    if not writer.isOpened():
        raise SystemExit("OpenCV has no MJPG encoder here")
    rng = np.random.default_rng(1)
    for k in range(frames):
        writer.write(camera_image(k, rng))
    writer.release()
    return path


def write_audio(path: Path, seconds: float) -> Path:
    """16 kHz mono PCM 16: engine-like harmonics under wind noise."""
    rng = np.random.default_rng(2)
    t = np.arange(round(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    tone = sum(0.2 / k * np.sin(2 * np.pi * 90 * k * t) for k in (1, 2, 3))
    sf.write(path, tone + rng.normal(0, 0.02, len(t)), SAMPLE_RATE, subtype="PCM_16")
    return path


def lidar_rays() -> np.ndarray:
    """Unit directions [beams * steps, 3] of a 32-beam spinning LiDAR, -25 to +5 degrees."""
    elev = np.radians(np.linspace(-25.0, 5.0, LIDAR_BEAMS))[:, None]
    azim = np.linspace(-np.pi, np.pi, LIDAR_STEPS, endpoint=False)[None, :]
    ones = np.ones_like(azim)
    d = np.stack([np.cos(elev) * np.cos(azim), np.cos(elev) * np.sin(azim), np.sin(elev) * ones], -1)
    return d.reshape(-1, 3)


def lidar_sweep(rays: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """[N, 4] float32 KITTI-style points: ground plane and 12 boxes within 50 m, reflectance in [0, 1]."""
    count = 12
    centre_r, centre_a = rng.uniform(5, 50, count), rng.uniform(-np.pi, np.pi, count)
    car = rng.random(count) < 0.7  # the rest: trucks, huts, walls
    size = np.where(car[:, None], [4.5, 1.8, 1.5], rng.uniform([6, 2, 2.5], [15, 10, 6], (count, 3)))
    ground = np.full(count, -LIDAR_HEIGHT_M)
    centre = np.stack([centre_r * np.cos(centre_a), centre_r * np.sin(centre_a), ground], 1)  # (B, 3)
    lo = centre - size * [0.5, 0.5, 0.0]  # (B, 3)
    hi = centre + size * [0.5, 0.5, 1.0]
    with np.errstate(divide="ignore", invalid="ignore"):
        t1, t2 = lo[None] / rays[:, None], hi[None] / rays[:, None]  # (R, B, 3) slab method
    near = np.nanmax(np.minimum(t1, t2), axis=2)  # (R, B)
    far = np.nanmin(np.maximum(t1, t2), axis=2)
    t_box = np.where((near <= far) & (near > 0), near, np.inf)
    which = t_box.argmin(axis=1)  # (R,)
    t_box = t_box[np.arange(len(rays)), which]
    with np.errstate(divide="ignore"):
        t_ground = np.where(rays[:, 2] < 0, -LIDAR_HEIGHT_M / rays[:, 2], np.inf)
    hit = np.minimum(t_box, t_ground)
    reflect = np.where(
        t_box < t_ground, rng.uniform(0.3, 0.9, count)[which], rng.uniform(0.05, 0.3, len(rays))
    )
    keep = (hit < 120.0) & (rng.random(len(rays)) > 0.03)  # sky and 3 % dropouts give no return
    r = hit[keep] + rng.normal(0, 0.02, keep.sum())  # 2 cm range noise
    return np.concatenate([rays[keep] * r[:, None], reflect[keep, None]], 1).astype("<f4")


def write_kitti(folder: Path, sweeps: int) -> tuple[Path, float]:
    """`sweeps` .bin files; returns the folder and the mean points per sweep."""
    folder.mkdir()
    rays, rng = lidar_rays(), np.random.default_rng(3)
    counts = []
    for k in range(sweeps):
        points = lidar_sweep(rays, rng)
        points.tofile(folder / f"{k:06d}.bin")
        counts.append(len(points))
    return folder, statistics.fmean(counts)


# ----------------------------------------------------------------------------- file backends


def frames_of(source: Source) -> Iterator[tuple[Frame, float, float]]:
    """(frame, wall s, CPU s) per read until the source ends."""
    with source:
        while True:
            w0, c0 = time.perf_counter(), time.process_time()
            try:
                frame = source.read()
            except EndOfStream:
                return
            yield frame, time.perf_counter() - w0, time.process_time() - c0


def bench_camera(path: Path, plan: Plan) -> tuple[dict[str, Any], Frame]:
    pre = CameraPreprocessor(CameraPreprocessConfig(height=MODEL_SIDE, width=MODEL_SIDE))
    read, prep = Times.empty(), Times.empty()
    last: Frame | None = None
    for k, (frame, wall, cpu) in enumerate(frames_of(CameraFileSource(CameraFileConfig(path=str(path))))):
        if k < plan.warmup:
            pre(frame)
            continue
        read.add(wall, cpu)
        timed(partial(pre, frame), prep)
        last = frame
    assert last is not None, "the video gave no frames"
    return {
        "input": f"{CAMERA_W}x{CAMERA_H} MJPEG AVI -> {MODEL_SIDE}x{MODEL_SIDE}",
        "frame": "video frame",
        "required_per_s": CAMERA_HZ,
        "read": read.summary(),
        "preprocess": prep.summary(),
    }, last


def bench_microphone(path: Path, plan: Plan) -> tuple[dict[str, Any], Frame, Frame]:
    """Read cost per 0.1 s tick (two 50 ms chunks) and log-mel cost per 1 s window.

    Returns the row, the last chunk read and the last window preprocessed.
    """
    cfg = MicrophoneFileConfig(path=str(path), sample_rate=SAMPLE_RATE, chunk_s=CHUNK_S)
    chunk_times, chunks = Times.empty(), []
    for frame, wall, cpu in frames_of(MicrophoneFileSource(cfg)):
        chunk_times.add(wall, cpu)
        chunks.append(frame)
    audio = np.concatenate([c.data for c in chunks])
    pre = MicrophonePreprocessor(MicrophonePreprocessConfig(sample_rate=SAMPLE_RATE))
    window, hop = pre.config.window_samples, SAMPLE_RATE // round(AUDIO_TICK_HZ)
    prep = Times.empty()
    last: Frame | None = None
    for k, end in enumerate(range(window, len(audio) + 1, hop)):
        last = Frame(
            modality=Modality.MICROPHONE,
            sensor_id="mic0",
            timestamp=end / SAMPLE_RATE,
            wall_time=0.0,
            data=audio[end - window : end],
            sample_rate=float(SAMPLE_RATE),
        )
        if k < plan.warmup:
            pre(last)
            continue
        timed(partial(pre, last), prep)
    assert last is not None, "the audio file is shorter than one window"
    # A tick reads CHUNKS_PER_TICK chunks: scale the per-chunk read cost to the tick.
    read = chunk_times.summary()
    read = {**read, **{k: v * CHUNKS_PER_TICK for k, v in read.items() if k.endswith("_ms")}}
    read["chunks_read"] = read.pop("calls")
    return (
        {
            "input": f"{SAMPLE_RATE} Hz WAV, 1 s log-mel windows (32x32)",
            "frame": f"0.1 s tick ({CHUNKS_PER_TICK} chunks read + 1 window)",
            "required_per_s": AUDIO_TICK_HZ,
            "read": read,
            "preprocess": prep.summary(),
        },
        chunks[-1],
        last,
    )


def bench_lidar(folder: Path, mean_points: float, plan: Plan) -> tuple[dict[str, Any], Frame]:
    pre = LidarPreprocessor(LidarPreprocessConfig(voxel_size=0.2, max_points=1024, intensity_scale=1.0))
    read, prep = Times.empty(), Times.empty()
    last: Frame | None = None
    for k, (frame, wall, cpu) in enumerate(frames_of(KittiSource(KittiConfig(path=str(folder))))):
        if k < plan.warmup:
            pre(frame)
            continue
        read.add(wall, cpu)
        timed(partial(pre, frame), prep)
        last = frame
    assert last is not None, "the KITTI folder gave no sweeps"
    return {
        "input": f"KITTI .bin, {mean_points / 1e3:.1f}k points/sweep -> voxel 0.2 m, 1024 points",
        "frame": "sweep",
        "required_per_s": LIDAR_HZ,
        "read": read.summary(),
        "preprocess": prep.summary(),
    }, last


def add_load(row: dict[str, Any]) -> dict[str, Any]:
    """Per-frame totals, one-core frame rate and the core fraction at the sensor rate."""
    read, prep, rate = row["read"], row["preprocess"], row["required_per_s"]
    wall = read["wall_mean_ms"] + prep["wall_mean_ms"]
    cpu = read["cpu_mean_ms"] + prep["cpu_mean_ms"]
    return {
        **row,
        "total_wall_ms": wall,
        "total_cpu_ms": cpu,
        "frames_per_s_one_core": 1e3 / cpu,
        "core_fraction_cpu": cpu * rate / 1e3,
        "core_fraction_wall": wall * rate / 1e3,
    }


# ----------------------------------------------------------------------------- simulator


def bench_simulated(plan: Plan) -> dict[str, dict[str, Any]]:
    """Render cost per frame of each simulated source at its default sensor settings."""
    sources = {
        # name: (modality, config, frame described, frames timed)
        "camera": (
            Modality.CAMERA,
            {"width": CAMERA_W, "height": CAMERA_H, "rate_hz": CAMERA_HZ},
            f"{CAMERA_W}x{CAMERA_H} RGB frame",
            plan.sim_frames,
        ),
        "microphone": (
            Modality.MICROPHONE,
            {"rate_hz": SIM_MIC_HZ, "sample_rate": SAMPLE_RATE},
            f"{1e3 / SIM_MIC_HZ:.0f} ms chunk at {SAMPLE_RATE} Hz",
            2 * plan.sim_frames,
        ),
        "lidar": (Modality.LIDAR, {"rate_hz": SIM_LIDAR_HZ}, "sweep", plan.sim_frames),
    }
    rows = {}
    for name, (modality, config, what, count) in sources.items():
        times, rows_seen = Times.empty(), []
        with make_source(modality, parse_source(modality, {"backend": "simulated", **config})) as source:
            for k in range(plan.warmup + count):
                frame = source.read() if k < plan.warmup else timed(source.read, times)
                rows_seen.append(frame.data.shape[0])
        s = times.summary()
        # LiDAR point counts vary per sweep: the mean, with the other dimensions of the last frame.
        shape = "x".join([f"{statistics.fmean(rows_seen):.0f}", *map(str, frame.data.shape[1:])])
        rows[name] = {
            "frame": what,
            "shape": f"{shape} {frame.data.dtype}",
            "required_per_s": config["rate_hz"],
            "render": s,
            "frames_per_s_one_core": 1e3 / s["cpu_mean_ms"],
            "core_fraction_cpu": s["cpu_mean_ms"] * config["rate_hz"] / 1e3,
            "core_fraction_wall": s["wall_mean_ms"] * config["rate_hz"] / 1e3,
        }
        progress(f"simulated {name}: {s['cpu_mean_ms']:.2f} ms CPU per frame")
    return rows


# ----------------------------------------------------------------------------- serialization


def serialize_frame(frame: Frame) -> bytes:
    """One Frame as an Arrow IPC stream: the route `serialize_sample` takes, for a frame table."""
    table = frames_to_table([frame])
    sink = pa.BufferOutputStream()
    with ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return bytes(sink.getvalue().to_pybytes())


def memcpy(arrays: list[np.ndarray]) -> Callable[[], None]:
    """A copy of every array into preallocated memory: the bytes-moved ceiling."""
    dst = [np.empty_like(a) for a in arrays]

    def run() -> None:
        for d, a in zip(dst, arrays, strict=True):
            np.copyto(d, a)

    return run


def throughput(name: str, payload: list[np.ndarray], fn: Callable[[], Any], plan: Plan) -> dict[str, Any]:
    nbytes = sum(a.nbytes for a in payload)
    ser = per_call(fn, min_time_s=plan.min_time_s).summary()
    copy = per_call(memcpy(payload), min_time_s=plan.min_time_s).summary()
    result = fn()
    row: dict[str, Any] = {
        "payload": name,
        "payload_bytes": nbytes,
        "serialized_bytes": len(result) if isinstance(result, bytes) else None,
        "us_per_call": 1e3 * ser["wall_median_ms"],
        "bytes_per_s": nbytes / (ser["wall_median_ms"] / 1e3),
        "memcpy_bytes_per_s": nbytes / (copy["wall_median_ms"] / 1e3),
    }
    row["fraction_of_memcpy"] = row["bytes_per_s"] / row["memcpy_bytes_per_s"]
    progress(
        f"serialize {name}: {row['bytes_per_s'] / 1e9:.2f} GB/s ({row['fraction_of_memcpy']:.1%} of memcpy)"
    )
    return row


def model_ready_sample(frames: dict[Modality, Frame], window: Frame) -> FusedSample:
    """The FusedSample the pipeline ships: each modality's real preprocessed Segment."""
    segments: dict[Modality, Segment] = {
        Modality.CAMERA: CameraPreprocessor()(frames[Modality.CAMERA]),
        Modality.MICROPHONE: MicrophonePreprocessor()(window),
        Modality.LIDAR: LidarPreprocessor(LidarPreprocessConfig(intensity_scale=1.0))(frames[Modality.LIDAR]),
    }
    return FusedSample(
        seq=0,
        timestamp=1.0,
        segments=segments,
        capture_times={m: f.timestamp for m, f in frames.items()},
        stage_times={"fused": time.time()},
    )


def bench_serialization(frames: dict[Modality, Frame], window: Frame, plan: Plan) -> list[dict[str, Any]]:
    sample = model_ready_sample(frames, window)
    arrays = [a for s in sample.segments.values() for a in (s.values, s.positions) if a is not None]
    wire = serialize_sample(sample)
    rows = [
        throughput(
            "FusedSample (64x64 camera, 32x32 mel, 1024 points)",
            arrays,
            lambda: serialize_sample(sample),
            plan,
        ),
        throughput("FusedSample, deserialize", arrays, lambda: deserialize_sample(wire), plan),
    ]
    names = {
        Modality.CAMERA: f"Frame camera {CAMERA_W}x{CAMERA_H}x3 uint8",
        Modality.MICROPHONE: f"Frame microphone {CHUNK_S * 1e3:.0f} ms chunk",
        Modality.LIDAR: "Frame LiDAR sweep",
    }
    for m, frame in frames.items():
        rows.append(throughput(names[m], [frame.data], partial(serialize_frame, frame), plan))
    return rows


# ----------------------------------------------------------------------------- report


def machine_info(cpu: int) -> dict[str, Any]:
    model = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    import librosa
    import open3d

    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "pinned_cpu": cpu,
        "python": platform.python_version(),
        "numpy": np.__version__,
        "opencv": cv2.__version__,
        "librosa": librosa.__version__,
        "soundfile": sf.__version__,
        "pyarrow": pa.__version__,
        "open3d": open3d.__version__,
    }


def total_row(rows: dict[str, dict[str, Any]]) -> dict[str, float]:
    cpu = sum(r["core_fraction_cpu"] for r in rows.values())
    wall = sum(r["core_fraction_wall"] for r in rows.values())
    return {
        "core_fraction_cpu": cpu,
        "core_fraction_wall": wall,
        "headroom_cpu": 1 - cpu,
        "headroom_wall": 1 - wall,
    }


def markdown(report: dict[str, Any]) -> str:
    m = report["machine"]
    load = report["load_average"]
    out = [
        f"Machine: {m['cpu']}, {m['cores']} cores (pinned to CPU {m['pinned_cpu']}); Python {m['python']}, "
        f"numpy {m['numpy']}, OpenCV {m['opencv']}, librosa {m['librosa']}, pyarrow {m['pyarrow']}, "
        f"open3d {m['open3d']}.",
        f"Load average (1/5/15 min) at start {load['start']}, at end {load['end']}"
        + (
            "  (other work shared the machine: wall times are inflated, CPU times much less so)"
            if max(load["start"][0], load["end"][0]) > 0.5
            else ""
        ),
        "",
        "### Read + preprocess on one core (file backends)",
        "",
        "| modality | input | per | read ms | preprocess ms | total ms CPU (wall) | frames/s on 1 core "
        "| required /s | share of 1 core, CPU (wall) |",
        "|---|---|---|--:|--:|--:|--:|--:|--:|",
    ]
    for name, r in report["preprocess"].items():
        out.append(
            f"| {name} | {r['input']} | {r['frame']} | {r['read']['cpu_mean_ms']:.2f} "
            f"| {r['preprocess']['cpu_mean_ms']:.2f} | {r['total_cpu_ms']:.2f} ({r['total_wall_ms']:.2f}) "
            f"| {r['frames_per_s_one_core']:.0f} | {r['required_per_s']:g} "
            f"| {r['core_fraction_cpu']:.1%} ({r['core_fraction_wall']:.1%}) |"
        )
    t = report["preprocess_total"]
    out += [
        f"| **all three** | | | | | | | | **{t['core_fraction_cpu']:.1%}** ({t['core_fraction_wall']:.1%}) |",
        "",
        f"Headroom on one core at sensor rates: **{t['headroom_cpu']:.1%}** by CPU time "
        f"({t['headroom_wall']:.1%} by wall time).",
        "",
        "### Simulator cost (rendering by `backend: simulated`; a real rig does not pay this)",
        "",
        "| source | frame | array | render ms CPU (wall) | frames/s on 1 core | required /s "
        "| share of 1 core, CPU (wall) |",
        "|---|---|---|--:|--:|--:|--:|",
    ]
    for name, r in report["simulated"].items():
        s = r["render"]
        out.append(
            f"| {name} | {r['frame']} | {r['shape']} "
            f"| {s['cpu_mean_ms']:.2f} ({s['wall_mean_ms']:.2f}) "
            f"| {r['frames_per_s_one_core']:.0f} | {r['required_per_s']:g} "
            f"| {r['core_fraction_cpu']:.1%} ({r['core_fraction_wall']:.1%}) |"
        )
    t = report["simulated_total"]
    out += [
        f"| **all three** | | | | | | **{t['core_fraction_cpu']:.1%}** ({t['core_fraction_wall']:.1%}) |",
        "",
        f"Simulator alone leaves {t['headroom_cpu']:.1%} of one core; simulator + preprocessing "
        f"use {t['core_fraction_cpu'] + report['preprocess_total']['core_fraction_cpu']:.1%}.",
        "",
        "### Serialization vs a plain copy of the same bytes (median, one core)",
        "",
        "| payload | payload bytes | serialized bytes | µs/call | GB/s | memcpy GB/s | of memcpy |",
        "|---|--:|--:|--:|--:|--:|--:|",
    ]
    for r in report["serialization"]:
        size = "" if r["serialized_bytes"] is None else f"{r['serialized_bytes']:,}"
        out.append(
            f"| {r['payload']} | {r['payload_bytes']:,} | {size} | {r['us_per_call']:.1f} "
            f"| {r['bytes_per_s'] / 1e9:.2f} | {r['memcpy_bytes_per_s'] / 1e9:.2f} "
            f"| {r['fraction_of_memcpy']:.1%} |"
        )
    ser, de = report["serialization"][:2]
    out += [
        "",
        f"Per-call overhead dominates small payloads: at {LIDAR_HZ:g} fused samples/s, serialize_sample "
        f"uses {ser['us_per_call'] * LIDAR_HZ / 1e6:.1%} of one core and deserialize_sample "
        f"{de['us_per_call'] * LIDAR_HZ / 1e6:.1%}.",
    ]
    return "\n".join(out)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--quick", action="store_true", help="smoke run: little input, short timings (< 30 s)"
    )
    parser.add_argument(
        "--out", type=Path, default=Path("docs/benchmarks/sensors.json"), help="JSON results file"
    )
    parser.add_argument("--cpu", type=int, default=None, help="CPU to pin to (default: the last allowed)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    plan = QUICK if args.quick else FULL
    start = time.perf_counter()
    load_start = [round(x, 2) for x in os.getloadavg()]
    cpu = pin_to_one_core(args.cpu)
    progress(f"pinned to CPU {cpu}; load average {load_start}; {'quick' if args.quick else 'full'} run")
    report: dict[str, Any] = {"machine": machine_info(cpu), "quick": args.quick, "plan": asdict(plan)}
    with tempfile.TemporaryDirectory(prefix="bench-sensors-") as tmp:
        d = Path(tmp)
        progress(
            f"writing {plan.video_frames} video frames, {plan.audio_s:g} s of audio, {plan.sweeps} sweeps"
        )
        video = write_video(d / "camera.avi", plan.video_frames)
        audio = write_audio(d / "audio.wav", plan.audio_s)
        kitti, mean_points = write_kitti(d / "velodyne", plan.sweeps)
        progress("camera: read + preprocess")
        camera, cam_frame = bench_camera(video, plan)
        progress("microphone: read + preprocess")
        mic, mic_frame, mic_window = bench_microphone(audio, plan)
        progress("lidar: read + preprocess")
        lidar, lidar_frame = bench_lidar(kitti, mean_points, plan)
    rows = {"camera": add_load(camera), "microphone": add_load(mic), "lidar": add_load(lidar)}
    rows["lidar"]["points_per_sweep_mean"] = mean_points
    report["preprocess"] = rows
    report["preprocess_total"] = total_row(rows)
    progress("simulated sources: render cost")
    report["simulated"] = bench_simulated(plan)
    report["simulated_total"] = total_row(report["simulated"])
    progress("serialization")
    frames = {Modality.CAMERA: cam_frame, Modality.MICROPHONE: mic_frame, Modality.LIDAR: lidar_frame}
    report["serialization"] = bench_serialization(frames, mic_window, plan)
    report["load_average"] = {"start": load_start, "end": [round(x, 2) for x in os.getloadavg()]}
    report["thread_pools"] = [
        {k: pool.get(k) for k in ("internal_api", "num_threads", "filepath")} for pool in threadpool_info()
    ]
    report["wall_s"] = time.perf_counter() - start
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(markdown(report))
    print(f"\nwall time {report['wall_s']:.0f} s; wrote {args.out}")


if __name__ == "__main__":
    main()
