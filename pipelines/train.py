"""`fusion train --num-workers N`: the same training run, data-parallel over Ray Train workers.

A thin shell, as every Ray piece of the project: Ray Train's `TorchTrainer` starts N workers
and sets up torch.distributed (gloo on CPUs, NCCL on GPUs) between them; each worker runs
`fusion.training.train.Trainer`, which wraps the model in DistributedDataParallel and takes its share of
every global batch. Rank 0 writes the checkpoints and the exported model, exactly where a
single-process run would, so `--resume` works across both ways of running.
"""

from __future__ import annotations

import json
import math
import tempfile
from pathlib import Path
from typing import Any

from fusion.errors import InputError
from fusion.training.train import TrainConfig, Trainer, TrainResult


def _worker(loop_config: dict[str, Any]) -> None:
    """One Ray Train worker: train, then report the summary (rank 0's is the run's result)."""
    import ray.train
    import torch

    config = TrainConfig.model_validate_json(loop_config["config"])
    if config.threads is None:
        # Workers share the node's cores: one intra-op thread each unless the config says more.
        torch.set_num_threads(max(1, int(loop_config["cpus_per_worker"])))
    trainer = Trainer(
        config, data_dir=loop_config["data_dir"], run_dir=loop_config["run_dir"], progress=False
    )
    result = trainer.run(resume=loop_config["resume"])
    metrics = {
        "steps": result.steps,
        "samples": result.samples,
        "seconds": result.seconds,
        "final_loss": result.final_loss,
        "final_accuracy": result.final_accuracy,
        "val_accuracy": math.nan if result.val_accuracy is None else result.val_accuracy,
        "checkpoint": "" if result.checkpoint is None else str(result.checkpoint),
    }
    # Ray Train keeps only metrics attached to a checkpoint: rank 0 attaches its summary to a
    # small one (the weights are already in the run directory); every rank reports (a barrier).
    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = None
        if ray.train.get_context().get_world_rank() == 0:
            (Path(tmp) / "summary.json").write_text(json.dumps(metrics))
            checkpoint = ray.train.Checkpoint.from_directory(tmp)
        ray.train.report(metrics, checkpoint=checkpoint)


def train_with_ray(
    config: TrainConfig,
    *,
    num_workers: int,
    data_dir: str | Path | None = None,
    run_dir: str | Path | None = None,
    resume: bool = False,
    address: str | None = None,
    use_gpu: bool = False,
    cpus_per_worker: float = 1.0,
) -> TrainResult:
    """Train `config` on `num_workers` Ray Train workers; starts a local Ray unless one is running."""
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from pipelines.cluster import start_ray

    if num_workers < 1:
        raise InputError(f"num_workers must be >= 1, got {num_workers}")
    # Workers run in other processes (and maybe hosts): give them absolute paths.
    data = Path(data_dir or config.data.dir).resolve()
    runs = Path(run_dir or config.run_dir or f"runs/{config.name}").resolve()
    if config.export and not Path(config.export).is_absolute():
        config = config.model_copy(update={"export": str(Path(config.export).resolve())})
    start_ray(None, address)
    trainer = TorchTrainer(
        _worker,
        train_loop_config={
            "config": config.model_dump_json(),
            "data_dir": str(data),
            "run_dir": str(runs),
            "resume": resume,
            "cpus_per_worker": cpus_per_worker,
        },
        scaling_config=ScalingConfig(
            num_workers=num_workers, use_gpu=use_gpu, resources_per_worker={"CPU": cpus_per_worker}
        ),
        run_config=RunConfig(name=config.name, storage_path=str(runs / "ray")),
    )
    metrics = trainer.fit().metrics or {}
    val = metrics.get("val_accuracy", math.nan)
    return TrainResult(
        steps=int(metrics.get("steps", 0)),
        samples=int(metrics.get("samples", 0)),
        seconds=float(metrics.get("seconds", 0.0)),
        final_loss=float(metrics.get("final_loss", math.nan)),
        final_accuracy=float(metrics.get("final_accuracy", math.nan)),
        val_accuracy=None if math.isnan(val) else float(val),
        checkpoint=Path(metrics["checkpoint"]) if metrics.get("checkpoint") else None,
    )
