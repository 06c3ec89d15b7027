"""Capacity benchmark: how many rigs one node runs at 10 Hz before a modality starves.

For N = 1, 2, 3, ... replicas of `configs/pipeline/sim-local.yaml`'s rig (camera 320x240 at
30 Hz, microphone 16 kHz, LiDAR 10 Hz; live mode; ticks on the LiDAR at 10 Hz; `sensor-small`,
one inference actor), `fusion run` on one local Ray node, one fresh process per N. After the
first prediction and `--warmup` seconds, the script measures `--seconds` of steady state and
then stops the run with SIGTERM (a clean stop: the sink flushed, the summary printed). Per N,
over the predictions whose fusion tick falls in the measured window:

- predictions/s against the target of 10 Hz x N (a tick never predicted, dropped anywhere, counts
  against it);
- the share of predictions that have each modality (a rig fusing without a sensor still
  predicts: this is what throughput alone would miss);
- p50 / p99 end-to-end latency (capture of a sample's newest reading -> prediction);
- the machine's CPU in use over the window (from /proc/stat: every process, the run's and Ray's);
- and, over the whole run from its summary, drops by reason (pipeline `dropped`, `sink_skipped`,
  the fusers' `sync_dropped`) and each fuser's `incomplete / samples`.

N "holds" when every modality is in >= 95 % of the samples and predictions/s >= 95 % of the
target; a series stops at the first N that does not (or at `--max-rigs`). Capacity = the
largest N that held: rigs per node at 10 Hz.

Two series separate the simulator's rendering (a cost a real sensor has on its own hardware)
from the pipeline's:

- **simulated**: the rigs as in sim-local, every frame rendered in its sensor actor;
- **pre-rendered**: the same rigs fed from a recording of sim-local (made first with
  `fusion record`, 30 s of scene, rendered as fast as possible), replayed by the `recording`
  backend with `realtime: true`: frames on the wall clock, restamped, looping, as a live
  device delivers them. Each replica's sensors read their own stream of the same recording.

Third, the rendering alone: per simulated sensor of the rig, CPU seconds to render one second of
its stream (frames rendered back to back in this process, the CPU time of the calls).

Run: `.venv/bin/python benchmarks/capacity.py` (~10 min on 2 cores); `--max-rigs`, `--seconds`,
`--warmup`, `--series`. Markdown on stdout, JSON in `--out`, a plot in `--plot`.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import psutil
import yaml

from fusion.sample import Modality
from fusion.sensors import parse_source

ROOT = Path(__file__).resolve().parent.parent
SIM_LOCAL = ROOT / "configs/pipeline/sim-local.yaml"
TICK_HZ = 10.0  # the rig's LiDAR: one fused sample per sweep
HOLDS = 0.95  # share of samples with each modality, and of the target throughput, that holds
MODALITIES = ("camera", "lidar", "microphone")
SENSOR_CPUS, FUSER_CPUS = 0.01, 0.02
# Process groups of a run, by the title Ray gives an actor's worker ("ray::SensorActor...").
GROUPS = {"ray::SensorActor": "sensors", "ray::FuserActor": "fusers", "ray::InferenceActor": "inference"}
SERIES = {
    "simulated": "simulated sensors (rendered in the sensor actors)",
    "prerendered": "pre-rendered (a recording replayed in real time)",
}


def progress(message: str, *, live: bool = False) -> None:
    """A line on stderr; `live` lines are rewritten in place until the next plain one."""
    print("\r\033[K" + message, end="" if live else "\n", file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------- configs


def base_config() -> dict[str, Any]:
    return yaml.safe_load(SIM_LOCAL.read_text())


def rig_config(series: str, rigs: int, recording: Path | None) -> dict[str, Any]:
    """sim-local with its rig replicated `rigs` times; pre-rendered: its sources replaced by the
    recording's streams of the same sensor ids, in real time."""
    config = base_config()
    # Ray's CPU reservations, lowered so that its accounting is not the limit measured: with the
    # defaults (0.05 per sensor, 0.1 per fuser, 1 per inference actor) 4 rigs fill 2 CPUs.
    config["flow"] = {"sensor_num_cpus": SENSOR_CPUS, "fuser_num_cpus": FUSER_CPUS}
    rig = config["rigs"][0]
    rig["replicas"] = rigs
    if series == "prerendered":
        assert recording is not None
        for sensor_id, spec in rig["sensors"].items():
            spec["source"] = {
                "backend": "recording",
                "path": str(recording),
                "sensor_id": sensor_id,
                "realtime": True,
            }
    return config


def make_recording(directory: Path, seconds: float) -> Path:
    """`fusion record` of sim-local's rig: `seconds` of scene, rendered as fast as possible (each
    source ends at the same scene time, so the recording loops seamlessly)."""
    config = base_config()
    for spec in config["rigs"][0]["sensors"].values():
        spec["source"] |= {"realtime": False, "duration_s": seconds}
    path = directory / "record.yaml"
    path.write_text(yaml.safe_dump(config))
    out = directory / "recording"
    began = time.monotonic()
    subprocess.run(
        [sys.executable, "-m", "fusion_cli", "record", "--config", str(path), "--out", str(out)],
        check=True,
        cwd=ROOT,
        env=child_env(),
        stdout=subprocess.DEVNULL,
    )
    progress(f"recorded {seconds:g} s of sim-local in {time.monotonic() - began:.1f} s: {out}")
    return out


def child_env() -> dict[str, str]:
    return os.environ | {
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    }


# ----------------------------------------------------------------------------- one run


def cpu_times() -> tuple[float, float]:
    """(busy, total) jiffies of the whole machine since boot."""
    fields = [float(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return sum(fields) - idle, sum(fields)


def tree_cpu(root: psutil.Process) -> dict[int, tuple[str, float]]:
    """pid -> (group, CPU seconds so far) for `root` and every process under it: the `fusion run`
    driver, the local Ray it started (GCS, raylet, agents) and every worker."""
    found = {}
    for proc in [root, *root.children(recursive=True)]:
        try:
            with proc.oneshot():
                title = " ".join(proc.cmdline())
                times = proc.cpu_times()
        except psutil.Error:  # gone meanwhile
            continue
        group = next((g for prefix, g in GROUPS.items() if title.startswith(prefix)), "driver and Ray")
        found[proc.pid] = (group, times.user + times.system)
    return found


def cpu_by_group(
    start: dict[int, tuple[str, float]], end: dict[int, tuple[str, float]], seconds: float
) -> dict[str, float]:
    """Cores each group used between two `tree_cpu` snapshots."""
    used: Counter[str] = Counter()
    for pid, (group, cpu) in end.items():
        used[group] += cpu - start.get(pid, (group, 0.0))[1]
    return {g: used[g] / seconds for g in ("sensors", "fusers", "inference", "driver and Ray")}


def read_predictions(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:  # the line being written
            break
    return rows


def count_lines(path: Path) -> int:
    try:
        with path.open("rb") as f:
            return sum(1 for _ in f)
    except FileNotFoundError:
        return 0


def run_once(
    series: str, rigs: int, *, workdir: Path, recording: Path | None, warmup: float, seconds: float
) -> dict[str, Any]:
    """One `fusion run` of `rigs` rigs: the measured window's numbers and the run's summary."""
    tag = f"{series}-{rigs}"
    config_path, output, log_path = (workdir / f"{tag}{ext}" for ext in (".yaml", ".jsonl", ".log"))
    config_path.write_text(yaml.safe_dump(rig_config(series, rigs, recording)))
    cmd = [
        sys.executable,
        "-m",
        "fusion_cli",
        "run",
        "--config",
        str(config_path),
        "--output",
        str(output),
        "--quiet",
    ]
    began = time.monotonic()
    with log_path.open("w") as log:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=child_env(), stdout=subprocess.DEVNULL, stderr=log)
        window: tuple[float, float] | None = None  # Unix times of the measured window
        cpu_start: tuple[float, float] | None = None
        cpu_end: tuple[float, float] | None = None
        tree_start: dict[int, tuple[str, float]] = {}
        tree_end: dict[int, tuple[str, float]] = {}
        root = psutil.Process(proc.pid)
        stop_at = None
        while proc.poll() is None:
            time.sleep(0.5)
            now, done = time.time(), count_lines(output)
            if window is None and done:
                window = (now + warmup, now + warmup + seconds)
            phase = "starting Ray and the actors"
            if window is not None:
                if cpu_start is None and now >= window[0]:
                    cpu_start, tree_start = cpu_times(), tree_cpu(root)
                if cpu_end is None and now >= window[1]:
                    cpu_end, tree_end = cpu_times(), tree_cpu(root)
                    stop_at = now + 2.0  # the window's last ticks are still on their way
                    proc.send_signal(signal.SIGTERM)
                phase = "warm-up" if now < window[0] else "measuring" if now < window[1] else "stopping"
            progress(
                f"{SERIES[series].split(' (')[0]}, {rigs} rig(s): {time.monotonic() - began:5.1f} s  "
                f"{phase:<27} {done} predictions",
                live=True,
            )
            if stop_at is not None and now > stop_at + 60:
                proc.kill()  # a stop that hangs must not hang the benchmark
    text = log_path.read_text()
    if proc.returncode not in (0, -signal.SIGTERM) or cpu_start is None or cpu_end is None:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{text[-3000:]}")
    summary = next(
        json.loads(line)["summary"] for line in reversed(text.splitlines()) if line.startswith('{"summary"')
    )
    busy = (cpu_end[0] - cpu_start[0]) / max(cpu_end[1] - cpu_start[1], 1e-9)
    result = measure(read_predictions(output), window, rigs) | {
        "rigs": rigs,
        "series": series,
        "machine_busy_share": busy,  # every process on the machine, for a check on other load
        "cpu_by_group": (groups := cpu_by_group(tree_start, tree_end, seconds)),
        "cpu_cores": sum(groups.values()),  # the run's own processes
        "cpu_share": sum(groups.values()) / (os.cpu_count() or 1),
    }
    result |= from_summary(summary)
    result["holds"] = holds(result)
    return result


def measure(predictions: list[dict[str, Any]], window: tuple[float, float], rigs: int) -> dict[str, Any]:
    start, end = window
    inside = [p for p in predictions if start <= p["timestamp"] < end and not p.get("error")]
    seconds = end - start
    latencies = sorted(p["latency_s"] for p in inside)
    share = {
        m: sum(m in p["modalities"] for p in inside) / len(inside) if inside else 0.0 for m in MODALITIES
    }
    return {
        "seconds": seconds,
        "predictions": len(inside),
        "predictions_per_s": len(inside) / seconds,
        "target_per_s": TICK_HZ * rigs,
        "throughput_share": len(inside) / (seconds * TICK_HZ * rigs),
        "modality_share": share,
        "latency_p50_ms": 1e3 * percentile(latencies, 0.5),
        "latency_p99_ms": 1e3 * percentile(latencies, 0.99),
        "errors": sum(1 for p in predictions if start <= p["timestamp"] < end and p.get("error")),
    }


def percentile(data: list[float], q: float) -> float:
    return data[min(len(data) - 1, int(q * len(data)))] if data else float("nan")


def from_summary(summary: dict[str, Any]) -> dict[str, Any]:
    """The whole run's drops by reason and each modality's missing share from the fusers."""
    drops: Counter[str] = Counter(summary.get("dropped", {}))
    drops.update({f"sink:{k}": v for k, v in summary.get("sink_skipped", {}).items()})
    samples, missing = 0, Counter[str]()
    for stats in summary.get("fusers", {}).values():
        drops.update({f"sync:{k}": v for k, v in stats.get("sync_dropped", {}).items()})
        samples += stats.get("samples", 0)
        missing.update(stats.get("incomplete", {}))
    return {
        "drops": dict(sorted(drops.items())),
        "fused_samples": samples,
        "fuser_missing_share": {m: missing[m] / samples if samples else 0.0 for m in MODALITIES},
        "run_latency_p50_ms": 1e3 * (summary.get("latency_p50_s") or float("nan")),
    }


def holds(result: dict[str, Any]) -> bool:
    return result["throughput_share"] >= HOLDS and min(result["modality_share"].values()) >= HOLDS


def run_series(
    series: str, args: argparse.Namespace, workdir: Path, recording: Path | None
) -> list[dict[str, Any]]:
    results = []
    for rigs in range(1, args.max_rigs + 1):
        result = run_once(
            series, rigs, workdir=workdir, recording=recording, warmup=args.warmup, seconds=args.seconds
        )
        results.append(result)
        share = result["modality_share"]
        progress(
            f"{SERIES[series].split(' (')[0]}, {rigs} rig(s): {result['predictions_per_s']:.1f}/s of "
            f"{result['target_per_s']:.0f}, camera {share['camera']:.0%} lidar {share['lidar']:.0%} "
            f"microphone {share['microphone']:.0%}, p50 {result['latency_p50_ms']:.0f} ms, "
            f"CPU {result['cpu_cores']:.2f} cores (sensors {result['cpu_by_group']['sensors']:.2f}): {'holds' if result['holds'] else 'STARVED'}"
        )
        if not result["holds"]:
            break
    return results


def capacity(results: list[dict[str, Any]]) -> int:
    held = [r["rigs"] for r in results if r["holds"]]
    return max(held) if held else 0


# ----------------------------------------------------------------------------- rendering alone


def render_cost(frames: int) -> dict[str, dict[str, Any]]:
    """CPU seconds per second of sensor time to render each of sim-local's simulated sensors."""
    from fusion.sensors import make_source

    rows = {}
    for sensor_id, spec in base_config()["rigs"][0]["sensors"].items():
        source_config = spec["source"] | {"realtime": False}
        modality = Modality(spec["modality"])
        with make_source(modality, parse_source(modality, source_config)) as source:
            for _ in range(5):  # first frames: lazy imports and caches
                source.read()
            cpu, wall = time.process_time(), time.perf_counter()
            for _ in range(frames):
                source.read()
            cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        rate = float(source_config["rate_hz"])
        rows[spec["modality"]] = {
            "sensor": sensor_id,
            "rate_hz": rate,
            "cpu_ms_per_frame": 1e3 * cpu / frames,
            "wall_ms_per_frame": 1e3 * wall / frames,
            "cpu_s_per_sensor_s": cpu / frames * rate,
        }
        progress(f"render alone, {spec['modality']}: {1e3 * cpu / frames:.2f} ms CPU per frame")
    return rows


# ----------------------------------------------------------------------------- report


def machine() -> dict[str, Any]:
    import ray
    import torch

    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "ray": ray.__version__,
        "torch": torch.__version__,
        "date": datetime.date.today().isoformat(),
        "load_average_before": os.getloadavg(),
    }


def markdown(report: dict[str, Any]) -> str:
    lines = []
    for series, results in report["series"].items():
        lines += [
            "",
            f"**{SERIES[series]}**: capacity **{'>= ' if report['censored'][series] else ''}"
            f"{report['capacity'][series]} rig(s)**"
            + (" (every N tried held: raise --max-rigs)" if report["censored"][series] else ""),
            "",
            "| rigs | predictions/s (target) | camera | LiDAR | microphone | p50 ms | p99 ms | CPU cores (sensors) | drops (whole run) | holds |",
            "|---:|---:|---:|---:|---:|---:|---:|---:|---|---|",
        ]
        for r in results:
            s = r["modality_share"]
            # A camera at 30 Hz has two frames per 10 Hz tick the tick does not use: by design.
            drops = (
                ", ".join(f"{k} {v}" for k, v in r["drops"].items() if not k.endswith(":evicted_unused"))
                or "none"
            )
            lines.append(
                f"| {r['rigs']} | {r['predictions_per_s']:.1f} ({r['target_per_s']:.0f}) | {s['camera']:.1%} | "
                f"{s['lidar']:.1%} | {s['microphone']:.1%} | {r['latency_p50_ms']:.1f} | {r['latency_p99_ms']:.1f} | "
                f"{r['cpu_cores']:.2f} ({r['cpu_by_group']['sensors']:.2f}) | {drops} | {'yes' if r['holds'] else '**no**'} |"
            )
    lines += [
        "",
        "| rendering alone | frame | CPU ms per frame (wall) | frames/s | CPU s per sensor s |",
        "|---|---|---:|---:|---:|",
    ]
    total = 0.0
    for modality, r in report["render"].items():
        total += r["cpu_s_per_sensor_s"]
        lines.append(
            f"| {modality} | {r['sensor']} | {r['cpu_ms_per_frame']:.2f} ({r['wall_ms_per_frame']:.2f}) | "
            f"{r['rate_hz']:g} | {r['cpu_s_per_sensor_s']:.3f} |"
        )
    lines.append(f"| **one rig** | | | | **{total:.3f}** |")
    return "\n".join(lines)


def plot(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    colours = {"camera": "tab:blue", "lidar": "tab:green", "microphone": "tab:orange"}
    styles = {"simulated": ("-", "o"), "prerendered": ("--", "s")}
    for series, results in report["series"].items():
        line, marker = styles[series]
        rigs = [r["rigs"] for r in results]
        for m in MODALITIES:
            left.plot(
                rigs,
                [100 * r["modality_share"][m] for r in results],
                line,
                marker=marker,
                color=colours[m],
                label=f"{m}, {series}",
            )
        right.plot(
            rigs,
            [100 * r["throughput_share"] for r in results],
            line,
            marker=marker,
            color="k",
            label=f"throughput, {series}",
        )
        right.plot(
            rigs,
            [100 * r["cpu_share"] for r in results],
            line,
            marker=marker,
            color="tab:red",
            label=f"CPU of the run, {series}",
        )
    for ax, title in (
        (left, "share of fused samples with each modality"),
        (right, "predictions / (10 Hz x rigs), and CPU of both cores"),
    ):
        ax.axhline(100 * HOLDS, color="grey", linewidth=0.8, linestyle=":")
        ax.set_xlabel("rigs on one node (2 cores)")
        ax.set_ylabel("%")
        ax.set_title(title, fontsize=10)
        ax.set_ylim(0, 105)
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.legend(fontsize=7, loc="lower left")
    fig.suptitle(
        "Capacity: rigs per node at 10 Hz (solid: simulated sensors; dashed: pre-rendered)", fontsize=11
    )
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--max-rigs", type=int, default=6, help="largest N tried per series")
    parser.add_argument("--seconds", type=float, default=20.0, help="measured seconds per run")
    parser.add_argument(
        "--warmup", type=float, default=8.0, help="seconds after the first prediction before measuring"
    )
    parser.add_argument("--series", choices=[*SERIES, "both"], default="both")
    parser.add_argument(
        "--record-seconds", type=float, default=30.0, help="scene seconds of the recording (it loops)"
    )
    parser.add_argument(
        "--render-frames", type=int, default=60, help="frames per sensor for the render-only cost"
    )
    parser.add_argument("--out", type=Path, default=ROOT / "docs/benchmarks/capacity.json")
    parser.add_argument("--plot", type=Path, default=ROOT / "docs/img/capacity.png")
    args = parser.parse_args()
    series = list(SERIES) if args.series == "both" else [args.series]
    report: dict[str, Any] = {"machine": machine(), "args": {k: str(v) for k, v in vars(args).items()}}
    began = time.monotonic()
    report["render"] = render_cost(args.render_frames)
    report["series"] = {}
    with tempfile.TemporaryDirectory(prefix="capacity-") as tmp:
        workdir = Path(tmp)
        recording = make_recording(workdir, args.record_seconds) if "prerendered" in series else None
        for name in series:
            report["series"][name] = run_series(name, args, workdir, recording)
    report["capacity"] = {name: capacity(results) for name, results in report["series"].items()}
    # A series whose every run held stopped at --max-rigs, not at its capacity: a lower bound.
    report["censored"] = {
        name: all(r["holds"] for r in results) for name, results in report["series"].items()
    }
    if len(report["capacity"]) == 2:
        sim, pre = report["capacity"]["simulated"], report["capacity"]["prerendered"]
        report["pipeline_only_vs_with_rendering"] = pre / sim if sim else None
        report["ratio_is_lower_bound"] = report["censored"]["prerendered"]
    report["load_average_after"] = os.getloadavg()
    report["wall_s"] = time.monotonic() - began
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1, default=str) + "\n")
    plot(report, args.plot)
    print(markdown(report))
    print(
        "\n"
        + json.dumps(
            {k: report[k] for k in ("capacity", "censored", "machine")}
            | {"ratio": report.get("pipeline_only_vs_with_rendering")}
        )
    )
    progress(f"done in {report['wall_s'] / 60:.1f} min: {args.out}, {args.plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
