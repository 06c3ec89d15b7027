"""The simulated world's rendering cost with `max_objects: 1` against `max_objects: 4` (issue 24).

Issue 24 made the world multi-object: the camera paints its objects far to near, the LiDAR
returns each beam from the nearest surface, the microphone sums every source. This measures
what that costs per frame, through the live simulated sensors' own path (`simulated_sensor` ->
`CameraSim` / `LidarSim` / `MicrophoneSim`, `World.scene`), at sim-local's settings (read
from configs/pipeline/sim-local.yaml: camera 320x240 at 30 Hz, LiDAR 16 x 900 at 10 Hz,
microphone 50 ms chunks at 16 kHz, 20 Hz), only `world.max_objects` differing.

Instants: the middles of the first `--instants` episodes (seed 0) where the four-object world
holds at least 3 objects; object 0 and the conditions are the same in both worlds, so the
one-object world holds object 0 alone there. Each round renders every instant in both worlds,
which world first alternating round by round, after `--warmup` untimed rounds. The microphone
renders a one-second block every 20th chunk (then slices it): its per-chunk time is the whole
second's 20 chunks through a fresh `MicrophoneSim`, divided by 20.

Times are process CPU time (all threads) with the process pinned to one CPU and thread pools
capped at one; share of one core = mean CPU per frame x rate. Ratio = 4-object median /
1-object median. Run: `.venv/bin/python benchmarks/render.py [--rounds N] [--json PATH]
[--markdown]`.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import yaml
from threadpoolctl import threadpool_limits

from fusion.sample import Modality
from fusion.sensors import parse_source
from fusion.sensors.simulated import simulated_sensor
from fusion.sim.world import World, frame_rng

SIM_LOCAL = Path(__file__).resolve().parents[1] / "configs/pipeline/sim-local.yaml"
SEED = 0
WORLDS = (1, 4)  # max_objects
RENDERERS = {  # modality -> what one frame is
    Modality.CAMERA: "camera frame",
    Modality.LIDAR: "LiDAR sweep",
    Modality.MICROPHONE: "50 ms audio chunk",
}


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def sim_local_sources(max_objects: int) -> dict[Modality, Any]:
    """sim-local's simulated source configs, each watching a world of `max_objects`, seed `SEED`."""
    rig = yaml.safe_load(SIM_LOCAL.read_text())["rigs"][0]
    out = {}
    for spec in rig["sensors"].values():
        modality = Modality(spec["modality"])
        raw = spec["source"] | {"realtime": False, "world": {"seed": SEED, "max_objects": max_objects}}
        out[modality] = parse_source(modality, raw)
    return out


def pick_instants(count: int) -> list[float]:
    """Middles of the first `count` episodes whose four-object world holds 3 or more objects."""
    world = World(sim_local_sources(4)[Modality.CAMERA].world)
    out, index = [], 0
    while len(out) < count:
        t = (index + 0.5) * world.config.episode_s
        if len(world.scene(t).objects) >= 3:
            out.append(t)
        index += 1
    return out


def frame_call(modality: Modality, config: Any, t: float) -> Callable[[], Any]:
    """One frame of `modality` at scene time t, as the live simulated source renders it."""
    world = World(config.world)
    rate = config.rate_hz
    if modality is not Modality.MICROPHONE:
        sensor = simulated_sensor(modality, world, config)
        index = round(t * rate)
        return lambda: sensor.render(t, t + 1 / rate, frame_rng(SEED, sensor.stream, index))

    def second() -> None:  # the 20 chunks of the second that holds t, through a fresh microphone
        mic = simulated_sensor(modality, world, config)
        first = int(t * rate) // int(rate) * int(rate)
        for k in range(first, first + int(rate)):
            mic.render(mic.frame_start(k, rate), mic.frame_start(k + 1, rate), frame_rng(SEED, mic.stream, k))

    return second


def measure(rounds: int, warmup: int, instants: list[float]) -> dict[str, Any]:
    configs = {n: sim_local_sources(n) for n in WORLDS}
    calls = {(m, n, t): frame_call(m, configs[n][m], t) for m in RENDERERS for n in WORLDS for t in instants}
    per_call = {
        m: 1 / configs[1][Modality.MICROPHONE].rate_hz if m is Modality.MICROPHONE else 1 for m in RENDERERS
    }
    samples: dict[tuple[Modality, int], list[float]] = {(m, n): [] for m in RENDERERS for n in WORLDS}
    for r in range(warmup + rounds):
        for n in WORLDS if r % 2 == 0 else WORLDS[::-1]:  # interleaved, which world first alternating
            for (m, world_n, _), call in calls.items():
                if world_n != n:
                    continue
                began = time.process_time()
                call()
                if r >= warmup:
                    samples[m, n].append((time.process_time() - began) * 1e3 * per_call[m])
    rows = []
    for m, what in RENDERERS.items():
        rate = configs[1][m].rate_hz
        row: dict[str, Any] = {"renderer": what, "rate_hz": rate}
        for n in WORLDS:
            ms = samples[m, n]
            row[f"objects_{n}"] = {
                "median_ms": statistics.median(ms),
                "p90_ms": float(np.percentile(ms, 90)),
                "core_share": statistics.fmean(ms) * rate / 1e3,
                "frames": len(ms),
            }
        row["ratio"] = row["objects_4"]["median_ms"] / row["objects_1"]["median_ms"]
        rows.append(row)
    return {"rows": rows}


def markdown(result: dict[str, Any]) -> str:
    head = (
        "| renderer | rate | 1 object: median / p90 ms | 4-object world: median / p90 ms "
        "| share of one core, 1 / 4 | ratio 4 / 1 |\n|---|---:|---:|---:|---:|---:|"
    )
    lines = [head]
    for row in result["rows"]:
        one, four = row["objects_1"], row["objects_4"]
        lines.append(
            f"| {row['renderer']} | {row['rate_hz']:g} Hz | {one['median_ms']:.2f} / {one['p90_ms']:.2f} "
            f"| {four['median_ms']:.2f} / {four['p90_ms']:.2f} "
            f"| {100 * one['core_share']:.1f} % / {100 * four['core_share']:.1f} % | **{row['ratio']:.2f}** |"
        )
    one = sum(row["objects_1"]["core_share"] for row in result["rows"])
    four = sum(row["objects_4"]["core_share"] for row in result["rows"])
    lines.append(f"| **one rig** | | | | **{100 * one:.1f} % / {100 * four:.1f} %** | {four / one:.2f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=100, help="timed rounds (default 100)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed rounds first (default 3)")
    parser.add_argument("--instants", type=int, default=4, help="scene instants per round (default 4)")
    parser.add_argument("--json", type=Path, help="write the results here")
    parser.add_argument("--markdown", action="store_true", help="print the table as Markdown")
    args = parser.parse_args()
    if args.rounds < 1 or args.warmup < 0 or args.instants < 1:
        parser.error("--rounds and --instants must be >= 1, --warmup >= 0")
    cpu = sorted(os.sched_getaffinity(0))[-1]
    os.sched_setaffinity(0, {cpu})
    threadpool_limits(1)
    cv2.setNumThreads(1)

    instants = pick_instants(args.instants)
    held = {
        n: [len(World(sim_local_sources(n)[Modality.CAMERA].world).scene(t).objects) for t in instants]
        for n in WORLDS
    }
    load = os.getloadavg()
    began = time.perf_counter()
    result = measure(args.rounds, args.warmup, instants)
    result |= {
        "machine": {"cpu": cpu_model(), "pinned_cpu": cpu, "cores": os.cpu_count(), "loadavg": load},
        "python": platform.python_version(),
        "numpy": np.__version__,
        "seed": SEED,
        "instants_s": instants,
        "objects_held": {str(n): held[n] for n in WORLDS},
        "rounds": args.rounds,
        "warmup": args.warmup,
        "wall_s": time.perf_counter() - began,
    }
    print(f"CPU: {result['machine']['cpu']} (pinned to CPU {cpu} of {os.cpu_count()}; load {load[0]:.2f})")
    print(
        f"seed {SEED}, instants {instants} s; objects held: "
        + ", ".join(f"max_objects {n}: {held[n]}" for n in WORLDS)
    )
    print(f"{args.rounds} rounds after {args.warmup} warm-up, {result['wall_s']:.1f} s")
    if args.markdown:
        print(markdown(result))
    else:
        for row in result["rows"]:
            one, four = row["objects_1"], row["objects_4"]
            print(
                f"{row['renderer']:>18}: 1 object {one['median_ms']:.2f} ms (p90 {one['p90_ms']:.2f}), "
                f"4-object world {four['median_ms']:.2f} ms (p90 {four['p90_ms']:.2f}), ratio {row['ratio']:.2f}"
            )
    if args.json:
        args.json.write_text(json.dumps(result, indent=2, default=str) + "\n")


if __name__ == "__main__":
    main()
