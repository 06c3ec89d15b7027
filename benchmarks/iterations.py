"""Iterative cross-attention, measured (issue 24): the detector reading the byte array 1, 2, 4 times.

Each variant is the model of a training config (default configs/train/sensor-small-det.yaml)
with only `num_cross_attends` changed (the paper's weight sharing as the preset sets it: the
first cross-attend unshared, later ones shared). Every variant trains on the same data, with
the same seed and the same number of steps, one after the other in this process, through the
project's own `fusion.training.train.Trainer`; then:

* the detection evaluation (`evaluate_detection`: nuScenes mAP per sensor subset) on the test
  split and on the shifted split;
* training wall time (the optimization steps, as `fusion train` reports it) and samples/s;
* inference latency p50 / p99 at batch 1 and batch 8: forward only, eval mode, under
  `torch.inference_mode()`, warmed up, on real test samples (all three sensors); the variants
  are timed in turns, one forward each per round, so machine noise hits all of them alike.

The data (`fusion.training.data.generate`, the config's splits resized to --samples and
--eval-samples; no validation split) goes to --work/data and is reused when present.

    .venv/bin/python benchmarks/iterations.py --work /tmp/iterations --steps 400 --samples 2000 \\
        --eval-samples 400 --json /tmp/iterations/results.json --markdown /tmp/iterations/table.md

Prints the machine (CPU model and flags), a live progress line, and the Markdown tables.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from fusion.model import Perceiver, collate  # noqa: E402
from fusion.model.info import count_flops, count_parameters, example_shapes  # noqa: E402
from fusion.training.data import generate, load_split  # noqa: E402
from fusion.training.detection_eval import evaluate_detection  # noqa: E402
from fusion.training.train import TrainConfig, Trainer, load_train_config, model_config  # noqa: E402

CONFIG = ROOT / "configs/train/sensor-small-det.yaml"
SIMD_FLAGS = ("avx", "avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16", "amx_tile")
LATENCY_BATCHES = (1, 8)


def machine_info() -> dict[str, Any]:
    """CPU model and flags (as benchmarks/model.py, plus the flags), torch and load."""
    cpu, flags = "unknown", list[str]()
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name") and cpu == "unknown":
            cpu = line.split(":", 1)[1].strip()
        if line.startswith("flags") and not flags:
            flags = line.split(":", 1)[1].split()
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "simd_flags": [f for f in SIMD_FLAGS if f in flags],
        "flags": flags,
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "load_average_1min": os.getloadavg()[0],  # other work on the machine skews timings
    }


# ----------------------------------------------------------------------------- configs


def data_config(base: TrainConfig, *, samples: int, eval_samples: int) -> dict[str, Any]:
    """The base config's data section with train resized to `samples`, test and shifted to
    `eval_samples`, and no validation split (the variants are compared on the test split)."""
    data = base.data.model_dump(mode="json")
    splits = data["splits"]
    missing = [s for s in ("train", "test", "shifted") if s not in splits]
    if missing:
        raise SystemExit(f"{CONFIG}: data.splits lacks {', '.join(missing)}")
    splits["train"]["samples"] = samples
    for name in ("test", "shifted"):
        splits[name]["samples"] = eval_samples
    data["splits"] = {k: splits[k] for k in ("train", "test", "shifted")}
    return data


def variant_config(
    base: TrainConfig, data: dict[str, Any], *, reads: int, steps: int, work: Path
) -> TrainConfig:
    """The base recipe training a model that reads the byte array `reads` times, for `steps` steps."""
    model = model_config(base).model_copy(
        update={"num_cross_attends": reads, "name": f"{base.model}-x{reads}"}
    )
    model_path = work / "models" / f"x{reads}.yaml"
    model_path.parent.mkdir(parents=True, exist_ok=True)
    model_path.write_text(yaml.safe_dump(model.model_dump(mode="json"), sort_keys=False))
    steps_per_epoch = data["splits"]["train"]["samples"] // base.batch_size
    raw = base.model_dump(mode="json") | {
        "name": f"{base.name}-x{reads}",
        "model": str(model_path),
        "data": data,
        "epochs": max(1, math.ceil(steps / max(1, steps_per_epoch))),
        "max_steps": steps,
        "warmup_steps": min(base.warmup_steps, steps // 5),
        "val_every": None,
        "checkpoint_every": steps,
        "run_dir": str(work / "runs" / f"x{reads}"),
        "export": None,
    }
    return TrainConfig.model_validate(raw)


# ----------------------------------------------------------------------------- measuring


def train_variant(config: TrainConfig, data_dir: Path) -> tuple[Perceiver, dict[str, Any]]:
    """Train one variant from scratch; its model and the training numbers."""
    t0 = time.perf_counter()
    trainer = Trainer(config, data_dir=data_dir, progress=True)
    result = trainer.run()
    model = trainer.model
    shapes = example_shapes(model.config)
    return model, {
        "steps": result.steps,
        "samples": result.samples,
        "train_s": result.seconds,
        "train_wall_s": time.perf_counter() - t0,  # with loading the split and building the model
        "samples_per_s": result.samples_per_s,
        "final_loss": result.final_loss,
        "parameters": count_parameters(model),
        "gflops_per_sample": count_flops(model.config, shapes, fast=True) / 1e9,
    }


def evaluate_variant(model: Perceiver, data_dir: Path, name: str, limit: int) -> dict[str, Any]:
    """mAP (and NDS) per sensor subset on the test and the shifted split."""
    out: dict[str, Any] = {}
    for split in ("test", "shifted"):
        data = load_split(data_dir, split, limit=limit)

        def say(subset: str, split: str = split) -> None:
            print(f"\r{name} eval {split}: {subset:28s}", end="", flush=True)

        report = evaluate_detection(model, data, progress=say)
        out[split] = {
            r.subset: {"map": r.mean_ap, "nds": r.metrics.nd_score, "by_condition": r.by_condition}
            for r in report.results
        }
    print(flush=True)
    return out


def latencies(models: dict[str, Perceiver], data_dir: Path, *, rounds: int, warmup: int) -> dict[str, Any]:
    """Forward latency p50/p99 (ms) per variant and batch, the variants timed in turns."""
    samples = load_split(data_dir, "test", limit=max(LATENCY_BATCHES)).samples
    out: dict[str, Any] = {name: {} for name in models}
    for batch in LATENCY_BATCHES:
        inputs = collate([s.segments for s in samples[:batch]])
        times: dict[str, list[float]] = {name: [] for name in models}
        with torch.inference_mode():
            for model in models.values():
                model.eval()
                for _ in range(warmup):
                    model(inputs)
            for r in range(rounds):
                for name, model in models.items():
                    t0 = time.perf_counter()
                    model(inputs)
                    times[name].append(time.perf_counter() - t0)
                print(f"\rlatency batch {batch}: round {r + 1}/{rounds}", end="", flush=True)
        print(flush=True)
        for name, ts in times.items():
            ms = 1e3 * np.asarray(ts)
            out[name][str(batch)] = {
                "p50_ms": float(np.percentile(ms, 50)),
                "p99_ms": float(np.percentile(ms, 99)),
            }
    return out


# ----------------------------------------------------------------------------- report


def markdown(report: dict[str, Any]) -> str:
    """The mAP tables (test, shifted) and the cost table, for docs/benchmarks.md."""
    variants = report["variants"]
    subsets = list(next(iter(variants.values()))["eval"]["test"])
    lines = []
    for split in ("test", "shifted"):
        lines += [
            f"mAP on the {split} split ({report['eval_samples']} samples), per sensor subset:",
            "",
            "| cross-attends | " + " | ".join(subsets) + " |",
            "| ---: | " + " | ".join("---:" for _ in subsets) + " |",
        ]
        for v in variants.values():
            cells = " | ".join(f"{v['eval'][split][s]['map']:.3f}" for s in subsets)
            lines.append(f"| {v['reads']} | {cells} |")
        lines.append("")
    lines += [
        "Cost (training: the optimization steps; latency: forward only, eval mode, ms):",
        "",
        "| cross-attends | params | GFLOPs/sample | training | samples/s | b1 p50 | b1 p99 | b8 p50 | b8 p99 |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, v in variants.items():
        t, lat = v["train"], report["latency"][name]
        lines.append(
            f"| {v['reads']} | {t['parameters'] / 1e6:.2f} M | {t['gflops_per_sample']:.2f} | {t['train_s']:.0f} s "
            f"| {t['samples_per_s']:.1f} | {lat['1']['p50_ms']:.1f} | {lat['1']['p99_ms']:.1f} "
            f"| {lat['8']['p50_ms']:.1f} | {lat['8']['p99_ms']:.1f} |"
        )
    return "\n".join(lines) + "\n"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--config", type=Path, default=CONFIG, help="training YAML (default: sensor-small-det's)"
    )
    parser.add_argument(
        "--cross-attends", type=int, nargs="+", default=[1, 2, 4], help="variants (default: 1 2 4)"
    )
    parser.add_argument("--steps", type=int, required=True, help="training steps per variant")
    parser.add_argument("--samples", type=int, required=True, help="train split size")
    parser.add_argument("--eval-samples", type=int, required=True, help="test and shifted split sizes")
    parser.add_argument("--work", type=Path, required=True, help="data, models and runs go here")
    parser.add_argument("--rounds", type=int, default=50, help="timed forwards per variant and batch")
    parser.add_argument("--warmup", type=int, default=5, help="untimed forwards first")
    parser.add_argument("--json", type=Path, default=None, help="write every number here")
    parser.add_argument("--markdown", type=Path, default=None, help="write the tables here")
    args = parser.parse_args(argv)
    for key in ("steps", "samples", "eval_samples", "rounds"):
        if getattr(args, key) < 1:
            parser.error(f"--{key.replace('_', '-')} must be at least 1, got {getattr(args, key)}")
    if len(set(args.cross_attends)) != len(args.cross_attends) or min(args.cross_attends) < 1:
        parser.error(f"--cross-attends must be distinct positive counts, got {args.cross_attends}")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    start = time.perf_counter()
    machine = machine_info()
    print(
        f"machine: {machine['cpu']}, {machine['cores']} cores, torch {machine['torch']} "
        f"({machine['torch_threads']} threads), load {machine['load_average_1min']:.2f}"
    )
    print(f"cpu flags: {' '.join(machine['flags'])}", flush=True)
    base = load_train_config(args.config)
    data = data_config(base, samples=args.samples, eval_samples=args.eval_samples)
    data_dir = args.work / "data"
    configs = {
        k: variant_config(base, data, reads=k, steps=args.steps, work=args.work) for k in args.cross_attends
    }
    gen = generate(next(iter(configs.values())).data, data_dir, progress=True)
    models: dict[str, Perceiver] = {}
    variants: dict[str, Any] = {}
    for reads, config in configs.items():
        name = f"x{reads}"
        models[name], trained = train_variant(config, data_dir)
        print(
            f"{name}: {trained['steps']} steps in {trained['train_s']:.0f} s ({trained['samples_per_s']:.1f} samples/s)"
        )
        variants[name] = {"reads": reads, "train": trained}
    for name, model in models.items():
        variants[name]["eval"] = evaluate_variant(model, data_dir, name, args.eval_samples)
    report = {
        "machine": machine,
        "config": str(args.config),
        "command": " ".join(sys.argv),
        "date": time.strftime("%Y-%m-%d"),
        "steps": args.steps,
        "batch_size": base.batch_size,
        "train_samples": args.samples,
        "eval_samples": args.eval_samples,
        "generate": {"samples": gen.samples, "skipped": gen.skipped, "seconds": gen.seconds},
        "variants": variants,
        "latency": latencies(models, data_dir, rounds=args.rounds, warmup=args.warmup),
    }
    report["wall_s"] = time.perf_counter() - start
    report["load_average_1min_end"] = os.getloadavg()[0]
    table = markdown(report)
    print()
    print(table)
    print(f"wall time {report['wall_s']:.0f} s")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=1, allow_nan=True) + "\n")
    if args.markdown:
        args.markdown.parent.mkdir(parents=True, exist_ok=True)
        args.markdown.write_text(table)


if __name__ == "__main__":
    main()
