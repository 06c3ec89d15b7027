"""Pipeline memory benchmark: process and object-store memory over a long live run, also with a slow sink.

The design's backpressure contract: in-flight work is bounded at every edge, so object-store
and process memory stay flat however long the run and however slow the consumer. Measured in
one run, on this machine, with the project's own `PipelineRunner` in live mode (simulated
camera 320x240 at 30 Hz, microphone 16 kHz, LiDAR 10 Hz, all in real time, as
`configs/pipeline/sim-local.yaml`; `sensor-small`), two scenarios one after the other:

1. **normal**: a sink that only counts predictions.
2. **slow sink**: the same sink behind a wrapper that sleeps `--sink-delay-ms` per prediction
   (default 100 ms: at most 10 predictions/s, no faster than the LiDAR-driven prediction
   rate, so the sink is the bottleneck). In live mode the runner writes to the sink on its own
   thread behind a bounded queue (`flow.max_sink_queue`), dropping the oldest waiting
   prediction when it is full (`sink_behind`): the driver and the sensors keep their pace, and
   memory must not grow with the backlog.

Every `--interval` seconds a sampler thread in the driver records:
- resident memory (RSS, and USS: the pages only that process holds, so without the shared
  object-store pages a worker has touched) of each process group: the driver, the sensor
  actors' workers, the fuser actor's, the inference actors', and Ray's own processes (GCS,
  raylet, which hosts the object store, and agents). Actor PIDs come from the actors
  themselves (`__ray_call__`), read with psutil;
- object-store usage in bytes and objects, from the raylet's store stats (what
  `ray memory --stats-only` prints);
- predictions and drops from the runner's stats, the fuser's sync drops and samples missing a
  modality, and, over the predictions the sink got since the previous sample, the p50 of the
  pipeline's latency (capture to prediction) and of their age at the sink (fusion tick to
  the sink's write); and how far each sensor's newest frame lags the wall clock.

Report: per scenario and process group, memory at the start of the steady phase (after the
first 20% of the run: actors warm up, allocators grow to their working set) against the end,
the least-squares slope over the steady phase in MiB per minute, and the maximum. Flat means
a slope near zero that does not grow with `--duration`: a short run's slope is mostly noise.

Run: `.venv/bin/python benchmarks/pipeline_memory.py` (two scenarios of `--duration` 300 s:
about 11 minutes), `--quick` for a 30 s smoke run of each; `--checkpoint PATH` for other
`sensor-small` weights than the shipped checkpoint. Results: Markdown on stdout, JSON in `--out`
(every sample, with each process's RSS and USS), a plot against time in `--plot`.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import statistics
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import pipeline as pipeline_benchmark  # benchmarks/pipeline.py, beside this script
import psutil
import ray
import yaml

from fusion.sample import Prediction
from fusion.sinks.base import Sink
from pipelines.config import PipelineConfig
from pipelines.runner import PipelineRunner

MIB = 1024 * 1024
WARMUP_FRACTION = 0.2
MODALITIES = ("camera", "microphone", "lidar")
GROUPS = ("driver", "sensors", "fuser", "inference", "ray system")
T = TypeVar("T")

# The shipped live rig (its preprocessing is the checkpoint's training one): one source of truth.
SIM_LOCAL = Path(__file__).resolve().parent.parent / "configs" / "pipeline" / "sim-local.yaml"


def sim_local() -> dict[str, Any]:
    return yaml.safe_load(SIM_LOCAL.read_text())


def sim_local_rig() -> dict[str, Any]:
    return sim_local()["rigs"][0]


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def pipeline_config(seconds: float, checkpoint: str | None = None) -> PipelineConfig:
    return PipelineConfig.model_validate(
        {
            "mode": "live",
            "duration_s": seconds,
            "model": {"preset": "sensor-small", "checkpoint": checkpoint},
            "rigs": [sim_local_rig()],
            "inference": {**sim_local()["inference"], "num_cpus": 0.5},
        }
    )


class Recorder(Sink):
    """The consumer: per prediction, when it arrived, how old its fusion tick was by then (the wait
    the consumer sees), the pipeline's own latency (capture to prediction) and its modalities."""

    def __init__(self) -> None:
        self.rows: list[tuple[float, float, float, int]] = []  # (monotonic, age s, latency s, modalities)

    def write(self, prediction: Prediction) -> None:
        now = time.time()
        self.rows.append(
            (time.monotonic(), now - prediction.timestamp, prediction.latency_s, len(prediction.modalities))
        )


class SlowSink(Sink):
    """Sleeps `delay_s` before passing each prediction on: a consumer slower than the pipeline."""

    def __init__(self, sink: Sink, delay_s: float) -> None:
        self.sink = sink
        self.delay_s = delay_s

    def write(self, prediction: Prediction) -> None:
        time.sleep(self.delay_s)
        self.sink.write(prediction)

    def close(self) -> None:
        self.sink.close()


def median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def retry(fn: Callable[[], T], tries: int = 5) -> T:
    """`fn()` again when the driver loop mutated a container while this thread was reading it."""
    for _ in range(tries - 1):
        try:
            return fn()
        except RuntimeError:
            time.sleep(0.001)
    return fn()


# ---- what is sampled --------------------------------------------------------------------------
def actor_pids(runner: PipelineRunner) -> dict[str, list[int]]:
    """PIDs of the workers hosting the runner's actors, asked of each actor."""

    def pid_of(actor: Any) -> Any:
        return actor.__ray_call__.remote(lambda _self: os.getpid())

    refs = {
        "sensors": [pid_of(s.actor) for r in runner.rigs for s in r.sensors],
        "fuser": [pid_of(r.fuser) for r in runner.rigs],
        "inference": [pid_of(h.actor) for h in runner.pool],
    }
    return {group: ray.get(rs, timeout=60) for group, rs in refs.items()}


def ray_system_pids(exclude: set[int]) -> list[int]:
    """Ray's own processes under this driver: GCS, raylet (the object store lives in it), agents,
    log monitor; not workers (actors of this or an earlier scenario, idle pooled workers)."""
    pids = []
    for p in psutil.Process().children(recursive=True):
        try:
            name = p.name()
        except psutil.Error:
            continue
        if p.pid in exclude or (name.startswith("ray::") and "Agent" not in name):
            continue
        pids.append(p.pid)
    return pids


def memory_of(pids: list[int], detail: dict[str, Any]) -> tuple[int, int, int]:
    """(RSS, USS, live processes) summed over `pids`, processes gone since skipped; each
    process's own (name, RSS MiB, USS MiB) goes into `detail`."""
    rss = uss = n = 0
    for pid in pids:
        try:
            proc = psutil.Process(pid)
            info = proc.memory_full_info()
            name = proc.name()
        except psutil.Error:
            continue
        rss += info.rss
        uss += info.uss
        n += 1
        detail[str(pid)] = [name, round(info.rss / MIB, 2), round(info.uss / MIB, 2)]
    return rss, uss, n


class ObjectStore:
    """Object-store bytes and objects in use, from the raylet's store stats (`ray memory
    --stats-only`); falls back to the `object_store_memory` resource when that API is missing."""

    def __init__(self) -> None:
        self.source = "raylet store stats"
        self._reply: Callable[..., Any] | None = None
        try:
            from ray._private.internal_api import get_memory_info_reply, get_state_from_address

            self._state = get_state_from_address(ray.get_runtime_context().gcs_address)
            self._reply = get_memory_info_reply
            self.used()
        except Exception as err:  # a Ray without the internal API: the resource view still tracks it
            log(f"object-store stats unavailable ({type(err).__name__}: {err}); using resources")
            self.source = "cluster_resources - available_resources (object_store_memory)"
            self._reply = None

    def used(self) -> tuple[int, int | None]:
        if self._reply is not None:
            stats = self._reply(self._state, timeout_seconds=10).store_stats
            return int(stats.object_store_bytes_used), int(stats.num_local_objects)
        total = ray.cluster_resources().get("object_store_memory", 0.0)
        return int(total - ray.available_resources().get("object_store_memory", total)), None


class Sampler(threading.Thread):
    """Samples memory and the runner's progress every `interval_s` until stopped."""

    def __init__(
        self,
        runner: PipelineRunner,
        recorder: Recorder,
        store: ObjectStore,
        *,
        name: str,
        duration_s: float,
        interval_s: float,
    ) -> None:
        super().__init__(daemon=True)
        self.runner = runner
        self.recorder = recorder
        self.seen = 0  # recorder rows already summarised
        self.store = store
        self.label = name
        self.duration_s = duration_s
        self.interval_s = interval_s
        self.pids: dict[str, list[int]] = {"driver": [os.getpid()]}
        self.fusers = [r.fuser for r in runner.rigs]
        self.sensors = [s for r in runner.rigs for s in r.sensors]
        self.samples: list[dict[str, Any]] = []
        self.stop = threading.Event()
        self.t0 = time.monotonic()

    def run(self) -> None:
        self.t0 = time.monotonic()
        # Asked here, not before `runner.run()`: live sensors are open and their frames come due.
        try:
            self.pids.update(actor_pids(self.runner))
        except Exception as err:  # memory of the driver and Ray's processes is still worth having
            log(f"actor pids unavailable: {type(err).__name__}: {err}")
        # Every `interval_s`, and a last sample just before the runner's deadline: what follows it
        # is the runner's drain and shutdown, not the run.
        last = max(0.0, self.duration_s - 0.5)
        times = [k * self.interval_s for k in range(math.ceil(last / self.interval_s))] + [last]
        for target in times:
            if self.stop.wait(max(0.0, target - (time.monotonic() - self.t0))):
                break
            t = time.monotonic() - self.t0
            try:
                self.samples.append(self.sample(t))
                self.samples[-1]["sample_cost_s"] = round(time.monotonic() - self.t0 - t, 4)
                self.progress(self.samples[-1])
            except Exception as err:  # a sample missed is not worth killing the run over
                log(f"\nsample at {t:.1f} s failed: {type(err).__name__}: {err}")
        print(file=sys.stderr, flush=True)

    def sample(self, t: float) -> dict[str, Any]:
        stats = self.runner.stats
        pids = dict(self.pids)
        pids["ray system"] = ray_system_pids({p for ps in self.pids.values() for p in ps})
        rss, uss, procs = {}, {}, {}
        detail: dict[str, dict[str, Any]] = {}
        for group in GROUPS:
            detail[group] = {}
            rss[group], uss[group], procs[group] = memory_of(pids.get(group, []), detail[group])
        store_bytes, store_objects = self.store.used()
        fused = [s.as_json() for s in ray.get([f.stats.remote() for f in self.fusers], timeout=30)]
        now = time.time()
        rows = self.recorder.rows[self.seen :]  # appended by the driver loop: a slice is a snapshot
        self.seen += len(rows)
        lag = {f"{s.rig}.{s.sensor_id}": now - s.latest for s in self.sensors if math.isfinite(s.latest)}
        return {
            "t": round(t, 3),
            "rss": rss,
            "uss": uss,
            "procs": procs,
            "processes": detail,  # group -> pid -> [name, RSS MiB, USS MiB]
            "object_store_bytes": store_bytes,
            "object_store_objects": store_objects,
            "predictions": stats.predictions,
            "dropped": retry(lambda: dict(stats.dropped)),
            "sink_skipped": retry(lambda: dict(self.runner.sink.skipped)),
            "fused": sum(f["samples"] for f in fused),
            "sync_dropped": dict(sum((Counter(f["sync_dropped"]) for f in fused), Counter())),
            "incomplete": dict(sum((Counter(f["incomplete"]) for f in fused), Counter())),
            "pending_samples": sum(len(r.pending) for r in self.runner.rigs),
            # Over the predictions the sink got since the previous sample:
            "age_at_sink_p50_s": median([r[1] for r in rows]),
            "latency_p50_s": median([r[2] for r in rows]),
            "all_modalities": sum(r[3] == len(MODALITIES) for r in rows) / len(rows) if rows else None,
            "sensor_lag_s": lag,
            "max_sensor_lag_s": max(lag.values()) if lag else None,
        }

    def progress(self, s: dict[str, Any]) -> None:
        age = f"{s['age_at_sink_p50_s']:.2f} s" if s["age_at_sink_p50_s"] is not None else "-"
        drops = sum(s["dropped"].values()) + sum(s["sink_skipped"].values())
        workers = sum(s["rss"][g] for g in ("sensors", "fuser", "inference"))
        lag = f"{s['max_sensor_lag_s']:.1f} s" if s["max_sensor_lag_s"] is not None else "-"
        print(
            f"\r[{self.label}] {s['t']:4.0f}/{self.duration_s:.0f} s  {s['predictions']} predictions "
            f"({s['predictions'] / max(s['t'], 1.0):.1f}/s)  drops {drops}  "
            f"age at sink {age}  sensor lag {lag}  "
            f"RSS driver {s['rss']['driver'] / MIB:.0f} MiB, actors {workers / MIB:.0f} MiB, "
            f"ray {s['rss']['ray system'] / MIB:.0f} MiB  store {s['object_store_bytes'] / MIB:.1f} MiB  ",
            end="",
            file=sys.stderr,
            flush=True,
        )


# ---- a scenario ------------------------------------------------------------------------------
def run_scenario(
    name: str,
    *,
    seconds: float,
    delay_s: float,
    interval_s: float,
    store: ObjectStore,
    checkpoint: str | None,
) -> dict:
    recorder = Recorder()
    sink: Sink = SlowSink(recorder, delay_s) if delay_s > 0 else recorder
    runner = PipelineRunner(pipeline_config(seconds, checkpoint), sink, status=False)
    log(f"{name}: starting the pipeline ...")
    runner.start()
    sampler = Sampler(runner, recorder, store, name=name, duration_s=seconds, interval_s=interval_s)
    log(f"{name}: running {seconds:.0f} s")
    sampler.start()
    try:
        summary = runner.run()
    finally:
        sampler.stop.set()
        sampler.join(timeout=30)
    log(f"{name}: pids {sampler.pids}; summary {json.dumps(summary, default=str)}")
    return {
        "sink_delay_s": delay_s,
        "summary": summary,
        "written": len(recorder.rows),
        "pids": sampler.pids,
        "samples": sampler.samples,
        "analysis": analyse(sampler.samples, seconds),
    }


def fit_slope(ts: list[float], ys: list[float]) -> float:
    """Least-squares slope dy/dt."""
    if len(ts) < 2:
        return math.nan
    mt, my = statistics.fmean(ts), statistics.fmean(ys)
    den = sum((t - mt) ** 2 for t in ts)
    return sum((t - mt) * (y - my) for t, y in zip(ts, ys, strict=True)) / den if den else math.nan


def series(samples: list[dict[str, Any]]) -> dict[str, list[float]]:
    """Memory series in MiB: RSS and USS per process group, and the object store."""
    out: dict[str, list[float]] = {}
    for g in GROUPS:
        out[g] = [s["rss"][g] / MIB for s in samples]
        out[f"{g} (USS)"] = [s["uss"][g] / MIB for s in samples]
    out["object store"] = [s["object_store_bytes"] / MIB for s in samples]
    return out


def interval_rates(samples: list[dict[str, Any]]) -> list[float]:
    """Predictions per second between consecutive samples."""
    return [
        (b["predictions"] - a["predictions"]) / max(b["t"] - a["t"], 1e-9)
        for a, b in itertools.pairwise(samples)
    ]


def analyse(samples: list[dict[str, Any]], seconds: float) -> dict[str, Any]:
    steady = [s for s in samples if s["t"] >= WARMUP_FRACTION * seconds]
    ts = [s["t"] / 60 for s in steady]
    memory = {
        key: {
            "start_mib": ys[0] if ys else math.nan,
            "end_mib": ys[-1] if ys else math.nan,
            "max_mib": max(ys) if ys else math.nan,
            "slope_mib_per_min": fit_slope(ts, ys),
        }
        for key, ys in series(steady).items()
    }
    rates = interval_rates(steady)

    def start_end(key: str) -> dict[str, float | None]:
        values = [(s["t"], s[key]) for s in steady if s[key] is not None]
        return {
            "start": values[0][1] if values else None,
            "end": values[-1][1] if values else None,
            "slope_per_min": fit_slope([t / 60 for t, _ in values], [v for _, v in values]),
        }

    complete = [s["all_modalities"] for s in steady if s["all_modalities"] is not None]
    return {
        "steady_from_s": steady[0]["t"] if steady else None,
        "steady_samples": len(steady),
        "memory": memory,
        "predictions_per_s_steady": statistics.fmean(rates) if rates else math.nan,
        "all_modalities_fraction_steady": statistics.fmean(complete) if complete else None,
        "max_sensor_lag_s": start_end("max_sensor_lag_s"),
        "age_at_sink_p50_s": start_end("age_at_sink_p50_s"),
        "latency_p50_s": start_end("latency_p50_s"),
    }


# ---- report ----------------------------------------------------------------------------------
def report(results: dict[str, Any]) -> str:
    m = results["machine"]
    lines = [
        f"Machine: {m['cpu']}, {m['cores']} cores, ray {m['ray']}; load average "
        f"{m['load_avg_start']} -> {m.get('load_avg_end')}. Live mode, simulated sensors in real time, "
        f"{results['duration_s']:.0f} s per scenario, sampled every {results['interval_s']:.0f} s; "
        f"steady phase from {WARMUP_FRACTION:.0%} of the run. Object store: {results['object_store_source']}.",
        "",
        "| scenario | group | procs | start MiB | end MiB | max MiB | slope MiB/min | USS start | USS end "
        "| USS slope MiB/min |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, sc in results["scenarios"].items():
        mem = sc["analysis"]["memory"]
        procs = sc["samples"][-1]["procs"] if sc["samples"] else {}
        for g in (*GROUPS, "object store"):
            r = mem[g]
            u = mem.get(f"{g} (USS)")
            uss = f"{u['start_mib']:.1f} | {u['end_mib']:.1f} | {u['slope_mib_per_min']:+.2f}" if u else "| |"
            lines.append(
                f"| {name} | {g} | {procs.get(g, '')} | {r['start_mib']:.1f} | {r['end_mib']:.1f} | "
                f"{r['max_mib']:.1f} | {r['slope_mib_per_min']:+.2f} | {uss} |"
            )
    lines += [
        "",
        "Flow, over the steady phase unless marked (start -> end: the first and the last sample interval):",
        "",
        "| scenario | sink delay ms | predictions | predictions/s | all 3 modalities | dropped (runner) "
        "| sink skipped | sync dropped (whole run) | samples without (whole run) | max pending "
        "| latency p50 s | age at sink p50 s | worst sensor lag s |",
        "|---|---:|---:|---:|---:|---|---|---|---|---:|---|---|---|",
    ]
    for name, sc in results["scenarios"].items():
        a, s = sc["analysis"], sc["summary"]
        last = sc["samples"][-1] if sc["samples"] else {}
        complete = a["all_modalities_fraction_steady"]
        lines.append(
            f"| {name} | {sc['sink_delay_s'] * 1e3:.0f} | {s['predictions']} | "
            f"{a['predictions_per_s_steady']:.2f} | {'-' if complete is None else f'{complete:.0%}'} | "
            f"{counts(s['dropped'])} | {counts(s['sink_skipped'])} | {counts(last.get('sync_dropped'))} | "
            f"{counts(last.get('incomplete'))} / {last.get('fused', '?')} fused | {s['max_pending_samples']} | "
            f"{span(a['latency_p50_s'])} | {span(a['age_at_sink_p50_s'])} | {span(a['max_sensor_lag_s'])} |"
        )
    return "\n".join(lines)


def counts(c: dict[str, int] | None) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(c.items())) if c else "0"


def span(d: dict[str, float | None]) -> str:
    return f"{fmt(d['start'])} -> {fmt(d['end'])}"


def fmt(x: float | None) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.2f}"


def plot(results: dict[str, Any], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [*((g, f"{g}: RSS (solid), USS (dashed), MiB") for g in GROUPS)]
    panels += [
        ("object store", "object store used, MiB"),
        ("rate", "predictions/s (per interval)"),
        ("lag", "age at sink p50 (solid), worst sensor lag (dashed), s"),
    ]
    fig, axes = plt.subplots(2, 4, figsize=(20, 8.5), sharex=True)
    colors = dict(zip(results["scenarios"], ("tab:blue", "tab:red", "tab:green"), strict=False))
    for ax, (key, title) in zip(axes.flat, panels, strict=True):
        for name, sc in results["scenarios"].items():
            ss = sc["samples"]
            ts = [s["t"] for s in ss]
            c = colors[name]
            if key in GROUPS:
                ax.plot(ts, [s["rss"][key] / MIB for s in ss], color=c, label=name)
                ax.plot(ts, [s["uss"][key] / MIB for s in ss], color=c, linestyle="--", linewidth=1)
            elif key == "object store":
                ax.plot(ts, [s["object_store_bytes"] / MIB for s in ss], color=c, label=name)
            elif key == "rate":
                ax.plot(ts[1:], interval_rates(ss), color=c, label=name)
            else:
                for key2, style in (("age_at_sink_p50_s", "-"), ("max_sensor_lag_s", "--")):
                    pts = [(s["t"], s[key2]) for s in ss if s[key2] is not None]
                    ax.plot([p[0] for p in pts], [p[1] for p in pts], color=c, linestyle=style)
        ax.axvspan(0, WARMUP_FRACTION * results["duration_s"], color="0.92", zorder=0)
        ax.set_title(title, fontsize=10)
        ax.grid(alpha=0.3)
        if key in GROUPS or key == "object store":
            lo, hi = ax.get_ylim()
            if hi - lo < 20:  # flat lines: keep a readable scale instead of magnifying noise
                mid = (hi + lo) / 2
                ax.set_ylim(max(0.0, mid - 10), mid + 10)
    for ax in axes[-1]:
        ax.set_xlabel("seconds into the run (grey: warm-up)")
    axes.flat[0].legend(fontsize=9)
    fig.suptitle(
        f"Pipeline memory, live mode, {results['duration_s']:.0f} s per scenario "
        f"(slow sink: {results['sink_delay_ms']:.0f} ms per prediction)"
    )
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def machine() -> dict[str, Any]:
    return {
        **pipeline_benchmark.machine(),
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "psutil": psutil.__version__,
        "load_avg_start": tuple(round(x, 2) for x in os.getloadavg()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=300.0, help="seconds per scenario")
    parser.add_argument("--sink-delay-ms", type=float, default=100.0, help="slow sink: sleep per prediction")
    parser.add_argument("--interval", type=float, default=None, help="seconds between samples (5; quick: 2)")
    parser.add_argument(
        "--checkpoint", default=None, help="sensor-small weights (default: the shipped checkpoint)"
    )
    parser.add_argument("--quick", action="store_true", help="30 s per scenario, for a smoke test")
    parser.add_argument("--out", default="docs/benchmarks/pipeline-memory.json", help="JSON results path")
    parser.add_argument("--plot", default="docs/benchmarks/pipeline-memory.png", help="PNG plot path")
    args = parser.parse_args()
    seconds = 30.0 if args.quick else args.duration
    interval = args.interval or (2.0 if args.quick else 5.0)
    info = machine()
    log(f"machine: {info}")

    ray.init(num_cpus=4, include_dashboard=False, configure_logging=False)
    store = ObjectStore()
    results: dict[str, Any] = {
        "machine": info,
        "duration_s": seconds,
        "interval_s": interval,
        "sink_delay_ms": args.sink_delay_ms,
        "checkpoint": args.checkpoint,
        "warmup_fraction": WARMUP_FRACTION,
        "object_store_source": store.source,
        "scenarios": {},
    }
    try:
        for name, delay_ms in (("normal", 0.0), ("slow sink", args.sink_delay_ms)):
            results["scenarios"][name] = run_scenario(
                name,
                seconds=seconds,
                delay_s=delay_ms / 1e3,
                interval_s=interval,
                store=store,
                checkpoint=args.checkpoint,
            )
            time.sleep(2.0)  # the killed actors' workers exit before the next scenario starts its own
    finally:
        ray.shutdown()
    info["load_avg_end"] = tuple(round(x, 2) for x in os.getloadavg())

    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2, default=str))
    plot(results, args.plot)
    print(report(results))
    log(f"JSON: {args.out}  plot: {args.plot}")


if __name__ == "__main__":
    main()
