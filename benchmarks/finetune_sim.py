"""Fine-tuning on a recorded, labelled sim session to a 3-class set, against the untuned model.

Every step is the `fusion` command a user runs (as subprocesses, one core each):

1. `fusion record` two sessions of the simulated rig (configs/pipeline/sim-labelled.yaml): a
   training session and a held-out one from another world seed (no episode shared). Recording
   simulated sensors writes the world's ground truth beside them as labels.csv.
2. `fusion data from-recording` both, onto none / person / vehicle with `--map` (MAP below).
3. `fusion train --init checkpoints/sensor-small.safetensors` with `classes: [none, person,
   vehicle]`: the classifier starts afresh, everything else from the shipped weights.
4. Both models on the held-out session's samples: the fine-tuned one as it is, the untuned one
   with its seven class probabilities summed per 3-class target (the same MAP), so each is
   judged on the same three classes.

    .venv/bin/python benchmarks/finetune_sim.py --work /tmp/finetune-sim [--seconds 240] [--epochs 3]

Prints a Markdown table (and writes `results.json` under --work); docs/robot-logs.md holds the run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

ROOT = Path(__file__).resolve().parent.parent
RIG = ROOT / "configs/pipeline/sim-labelled.yaml"
BASE = ROOT / "checkpoints/sensor-small.safetensors"
CLASSES = ["none", "person", "vehicle"]
# The sim's seven classes onto three: a cyclist is a person on a bicycle; every motor vehicle,
# two-wheeled or not, is a vehicle.
MAP = (
    "nothing=none,pedestrian=person,cyclist=person,"
    "car=vehicle,truck=vehicle,emergency_vehicle=vehicle,motorcycle=vehicle"
)
SEEDS = {"train": 7001, "test": 7002}


def fusion(*args: str) -> None:
    """One `fusion` command on one core."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    cmd = ["taskset", "-c", "0", sys.executable, "-m", "fusion_cli", *args]
    print("$ fusion " + " ".join(args), file=sys.stderr, flush=True)
    subprocess.run(cmd, check=True, env=env, cwd=ROOT)


def rig_config(work: Path, split: str, seconds: float, world: dict[str, Any]) -> Path:
    raw = yaml.safe_load(RIG.read_text())
    for sensor in raw["rigs"][0]["sensors"].values():
        sensor["source"].update(duration_s=seconds, world={**world, "seed": SEEDS[split]})
    path = work / f"rig-{split}.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def train_config(work: Path, *, epochs: int, lr: float) -> Path:
    rig = yaml.safe_load(RIG.read_text())["rigs"][0]
    raw = {
        "name": "sensor-small-3class",
        "model": "sensor-small",
        "classes": CLASSES,
        # The split's seed and size only matter to `fusion data generate`; these shards are recorded.
        "data": {"dir": str(work / "data"), "splits": {"train": {"seed": 1, "samples": 1}},
                 "preprocess": rig["preprocess"]},
        "batch_size": 16,
        "epochs": epochs,
        "lr": lr,
        "min_lr": lr / 20,
        "warmup_steps": 20,
        "modality_dropout": 0.3,
        "checkpoint_every": 100000,
        "threads": 1,
        "export": str(work / "sensor-small-3class.safetensors"),
    }  # fmt: skip
    path = work / "train.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def probabilities(model, samples, batch_size: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """Class probabilities [N, C] and positions [N, 3] with every modality of each sample."""
    from fusion.model import collate

    probs, pos = [], []
    model.eval()
    with torch.inference_mode():
        for lo in range(0, len(samples), batch_size):
            out = model(collate([s.segments for s in samples[lo : lo + batch_size]]))
            probs.append(out.logits.softmax(-1).numpy())
            pos.append(out.position.numpy())
    return np.concatenate(probs), np.concatenate(pos)


def score(pred: np.ndarray, pos: np.ndarray, data) -> dict[str, float]:
    labels = data.labels
    f1 = []
    for c in range(len(CLASSES)):
        tp = np.sum((pred == c) & (labels == c))
        denom = np.sum(pred == c) + np.sum(labels == c)
        f1.append(2 * tp / denom if denom else 0.0)
    has = np.array([s.target_position is not None for s in data.samples])
    true = np.array([s.target_position for s in data.samples if s.target_position is not None])
    err = np.linalg.norm(pos[has] - true, axis=1)
    return {
        "accuracy": float(np.mean(pred == labels)),
        "macro_f1": float(np.mean(f1)),
        **{f"recall_{n}": float(np.mean(pred[labels == c] == c)) for c, n in enumerate(CLASSES)},
        "position_median_m": float(np.median(err)),
        "position_p90_m": float(np.percentile(err, 90)),
    }


def evaluate(work: Path) -> dict[str, dict[str, float]]:
    from fusion.training.checkpoint import load_checkpoint
    from fusion.training.data import load_split
    from fusion.training.labels import ClassMap

    torch.set_num_threads(1)
    data = load_split(work / "data", "test")
    base = load_checkpoint(BASE)
    cmap = ClassMap(CLASSES, MAP)
    collapse = np.zeros((base.config.num_classes, len(CLASSES)))
    for i, name in enumerate(base.config.class_names or []):
        collapse[i, cmap.index(name)] = 1.0
    probs, pos = probabilities(base, data.samples)
    results = {"untuned (7 classes summed onto 3)": score((probs @ collapse).argmax(-1), pos, data)}
    tuned_path = work / "sensor-small-3class.safetensors"
    if tuned_path.is_file():
        probs, pos = probabilities(load_checkpoint(tuned_path), data.samples)
        results["fine-tuned (3 classes)"] = score(probs.argmax(-1), pos, data)
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--work", type=Path, required=True, help="a new folder for recordings, data, model")
    parser.add_argument("--seconds", type=float, default=240.0, help="sim time per session")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--lr", type=float, default=3e-4)
    parser.add_argument(
        "--world",
        type=json.loads,
        default={},
        help='the sessions\' WorldConfig changes, JSON: {"sensor_height_m": 0.9}',
    )
    parser.add_argument("--eval-only", action="store_true", help="record and evaluate the untuned model only")
    args = parser.parse_args()
    work: Path = args.work
    work.mkdir(parents=True, exist_ok=True)
    times: dict[str, float] = {}
    for split in ("train", "test"):
        rec = work / f"rec-{split}"
        config = rig_config(work, split, args.seconds, args.world)
        t0 = time.perf_counter()
        if not rec.exists():
            fusion("record", "--config", str(config), "--out", str(rec))
        t1 = time.perf_counter()
        if not (work / "data" / split).exists():
            fusion("data", "from-recording", "--recording", str(rec), "--config", str(config),
                   "--classes", ",".join(CLASSES), "--map", MAP, "--out", str(work / "data"), "--split", split)  # fmt: skip
        times[f"record {split}"], times[f"from-recording {split}"] = t1 - t0, time.perf_counter() - t1
    t0 = time.perf_counter()
    if not args.eval_only:
        fusion("train", "--config", str(train_config(work, epochs=args.epochs, lr=args.lr)), "--init", str(BASE),
               "--new-head", "--run-dir", str(work / "run"), "--quiet")  # fmt: skip
    times["fine-tune"] = time.perf_counter() - t0
    results = evaluate(work)
    manifest = json.loads((work / "data" / "manifest.json").read_text())
    out = {
        "results": results,
        "seconds": {k: round(v, 1) for k, v in times.items()},
        "data": {k: v["per_class"] for k, v in manifest["recordings"].items()},
        "args": {k: str(v) for k, v in vars(args).items()},
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, 1 used",
    }
    (work / "results.json").write_text(json.dumps(out, indent=2) + "\n")
    print("| model | accuracy | macro-F1 | recall none / person / vehicle | position median / p90 (m) |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for name, r in results.items():
        print(
            f"| {name} | {100 * r['accuracy']:.1f}% | {r['macro_f1']:.3f} | "
            f"{100 * r['recall_none']:.0f}% / {100 * r['recall_person']:.0f}% / {100 * r['recall_vehicle']:.0f}% | "
            f"{r['position_median_m']:.2f} / {r['position_p90_m']:.2f} |"
        )
    print(json.dumps(out["seconds"]), json.dumps(out["data"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
