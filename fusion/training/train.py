"""Training the Perceiver on generated data: `fusion train --config configs/train/<name>.yaml`.

AdamW with linear warm-up and a cosine decay, cross-entropy on the class plus a Huber loss on
the object position (masked for 'nothing', which has none), whole-modality dropout (the
model's `modality_dropout`, set from this config), a progress bar with loss and accuracy.
A model with a detection head (`model.detection`) adds the set loss on the samples' object
lists (`fusion.training.set_loss`); `label_weight` scales the one-label loss beside it.

Determinism and resumption. Everything random is a function of (seed, step): the batch order
of epoch e is a permutation drawn from (seed, e), and the torch generator (modality dropout,
dropout) is re-seeded from (seed, step, rank) before every step. A checkpoint therefore needs
only the weights, the optimizer's moments and the step, and a run resumed from step k makes
exactly the updates an uninterrupted run makes: bit for bit on the CPU.

Checkpoints, every `checkpoint_every` steps and at the end, are two safetensors files in the
run directory: `step-NNNNNNN.safetensors` (the model, loadable by `load_checkpoint`) and
`step-NNNNNNN.state.safetensors` (optimizer moments; written last, so a checkpoint whose state
file exists is complete). Nothing is ever pickled.

Distributed: when torch.distributed is initialized (Ray Train's TorchTrainer does it, see
`pipelines/train.py`), the model is wrapped in DistributedDataParallel and each rank takes its
share of every global batch; rank 0 writes checkpoints and logs.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from pydantic import Field, model_validator
from torch import nn
from tqdm import tqdm

from fusion.config import StrictModel, load_config
from fusion.errors import CheckpointError, ConfigError, InputError
from fusion.model import ModelConfig, Perceiver, build_model, preset_config
from fusion.model.config import DropoutSchedule
from fusion.training.checkpoint import TRAIN_CONFIG_KEY, read_checkpoint, save_checkpoint
from fusion.training.data import DataConfig, load_split
from fusion.training.finetune import InitReport, init_from_checkpoint
from fusion.training.losses import loss_fn, targets
from fusion.training.set_loss import GlobalMean, SetCriterion, SetLossConfig
from fusion.training.train_state import STEP_KEY, atomic_write, latest_checkpoint, load_state, save_state

log = logging.getLogger(__name__)

_CONFIG_KEY = TRAIN_CONFIG_KEY


class TrainConfig(StrictModel):
    """One training run; `data` is what `fusion data generate` renders for it."""

    name: str
    model: str  # a preset name (configs/model/<name>.yaml) or a path to a model YAML
    classes: list[str] | None = Field(default=None, min_length=1)  # the class names; None: the model's
    data: DataConfig
    seed: int = 0
    batch_size: int = Field(default=32, ge=1)
    epochs: int = Field(default=3, ge=1)
    max_steps: int | None = Field(default=None, ge=1)  # stop earlier than `epochs` (the schedule follows)
    lr: float = Field(default=1e-3, gt=0)
    min_lr: float = Field(default=2e-5, ge=0)  # the cosine ends here
    warmup_steps: int = Field(default=100, ge=0)
    weight_decay: float = Field(default=0.05, ge=0)
    betas: list[float] = Field(default=[0.9, 0.999], min_length=2, max_length=2)  # AdamW's
    grad_clip: float | None = Field(default=1.0, gt=0)
    modality_dropout: float = Field(default=0.3, ge=0, lt=1)  # probability, as the schedule reads it
    # independent: per modality and sample (one kept); subsets: per sample, a uniform proper subset
    modality_dropout_schedule: DropoutSchedule = "independent"
    position_weight: float = Field(default=0.1, ge=0)  # weight of the position loss
    huber_delta_m: float = Field(default=1.0, gt=0)
    # With a detection head: its set loss, and the weight of the one-label loss (class and
    # position) beside it. Kept by default: a Prediction still carries a label and a position.
    set_loss: SetLossConfig = SetLossConfig()
    label_weight: float = Field(default=1.0, ge=0)
    checkpoint_every: int = Field(default=500, ge=1)
    keep_checkpoints: int = Field(default=2, ge=1)
    val_every: int | None = Field(default=None, ge=1)  # steps; also at the end when set
    val_samples: int = Field(default=1000, ge=1)
    log_every: int = Field(default=25, ge=1)
    threads: int | None = Field(default=None, ge=1)  # torch intra-op threads; None: torch's default
    run_dir: str | None = None  # default runs/<name>
    export: str | None = None  # copy the final model here (e.g. checkpoints/sensor-small.safetensors)

    @model_validator(mode="after")
    def _check(self) -> TrainConfig:
        if "train" not in self.data.splits:
            raise InputError(f"data.splits needs a 'train' split (has: {', '.join(self.data.splits)})")
        if self.val_every is not None and "val" not in self.data.splits:
            raise InputError("val_every is set but data.splits has no 'val' split")
        if self.min_lr > self.lr:
            raise InputError(f"min_lr ({self.min_lr}) exceeds lr ({self.lr})")
        return self


def load_train_config(path: str | Path) -> TrainConfig:
    return load_config(TrainConfig, path)


def model_config(config: TrainConfig) -> ModelConfig:
    """The model to train: the preset or YAML named by `config.model`, with its modality dropout."""
    if config.model.endswith((".yaml", ".yml")):
        base = load_config(ModelConfig, config.model)
    else:
        base = preset_config(config.model)
    update: dict[str, Any] = {
        "modality_dropout": config.modality_dropout,
        "modality_dropout_schedule": config.modality_dropout_schedule,
    }
    if config.classes is not None:
        update |= {"num_classes": len(config.classes), "class_names": list(config.classes)}
    return base.model_copy(update=update)


def lr_at(config: TrainConfig, step: int, total: int) -> float:
    """Linear warm-up to `lr`, then cosine decay to `min_lr` at `total` steps."""
    if step < config.warmup_steps:
        return config.lr * (step + 1) / config.warmup_steps
    span = max(1, total - config.warmup_steps)
    progress = min(1.0, (step - config.warmup_steps) / span)
    return config.min_lr + 0.5 * (config.lr - config.min_lr) * (1 + math.cos(math.pi * progress))


def step_seed(seed: int, step: int, rank: int) -> int:
    """The torch seed of one step on one rank."""
    return int(np.random.SeedSequence([seed, step, rank]).generate_state(1, dtype=np.uint64)[0] >> 1)


def _param_groups(model: Perceiver, weight_decay: float) -> list[dict[str, Any]]:
    """Weight decay on matrices only: not on biases, norms, latents or modality embeddings."""
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    for name, p in model.named_parameters():
        is_matrix = p.ndim >= 2 and not name.endswith(("latents", "padding", "queries"))
        (decay if is_matrix else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


# --------------------------------------------------------------------------- the loop


@dataclass
class TrainResult:
    steps: int
    samples: int  # seen in this run (not counting steps before a resume)
    seconds: float  # wall time of the optimization steps
    final_loss: float
    final_accuracy: float  # running accuracy on the training batches (modality dropout on)
    val_accuracy: float | None
    checkpoint: Path | None

    @property
    def samples_per_s(self) -> float:
        return self.samples / self.seconds if self.seconds > 0 else math.nan


class Trainer:
    """One training run; `run()` trains from scratch or resumes from the newest checkpoint."""

    def __init__(
        self,
        config: TrainConfig,
        *,
        data_dir: str | Path | None = None,
        run_dir: str | Path | None = None,
        init: str | Path | None = None,
        new_head: bool = False,
        progress: bool = True,
    ) -> None:
        """`init`: a checkpoint to start from (`fusion.training.finetune`) instead of random weights;
        `new_head`: a class head whose classes differ from the checkpoint's starts afresh (else an error)."""
        self.config = config
        self.data_dir = Path(data_dir or config.data.dir)
        self.run_dir = Path(run_dir or config.run_dir or f"runs/{config.name}")
        self.progress = progress
        self.distributed = dist.is_available() and dist.is_initialized()
        self.rank = dist.get_rank() if self.distributed else 0
        self.world_size = dist.get_world_size() if self.distributed else 1
        if config.batch_size % self.world_size:
            raise ConfigError(
                f"batch_size ({config.batch_size}) must be divisible by the number of workers ({self.world_size})"
            )
        if config.threads:
            torch.set_num_threads(config.threads)
        self.train = load_split(self.data_dir, "train")
        if len(self.train) < config.batch_size:
            raise ConfigError(
                f"{self.data_dir}/train has {len(self.train)} samples, fewer than batch_size {config.batch_size}"
            )
        self.val = load_split(self.data_dir, "val", limit=config.val_samples) if config.val_every else None
        classes = model_config(config).num_classes
        if (top := int(self.train.labels.max())) >= classes:
            raise ConfigError(
                f"{self.data_dir}/train has label {top}, the model {classes} classes: data and the "
                "train config's `classes` (or its model's) disagree"
            )
        self.steps_per_epoch = len(self.train) // config.batch_size
        total = self.steps_per_epoch * config.epochs
        self.total_steps = min(total, config.max_steps) if config.max_steps else total
        # Losses are normalized by counts over the whole global batch, so that N workers take the
        # steps one process would (`GlobalMean`).
        self.mean = GlobalMean(self.world_size, dist.all_reduce if self.world_size > 1 else None)
        self.criterion = self._criterion(model_config(config))
        torch.manual_seed(config.seed)
        self.model = build_model(model_config(config))
        self.initialized: InitReport | None = (
            init_from_checkpoint(self.model, init, new_head=new_head) if init is not None else None
        )
        if init is None:
            self._init_position_head()
        self.optimizer = torch.optim.AdamW(
            _param_groups(self.model, config.weight_decay),
            lr=config.lr,
            betas=(config.betas[0], config.betas[1]),
        )
        self.net: nn.Module = self.model
        if self.distributed and self.world_size > 1:
            self.net = nn.parallel.DistributedDataParallel(self.model)

    def _criterion(self, model: ModelConfig) -> SetCriterion | None:
        """The set loss when the model has a detection head; every training sample needs objects."""
        if model.detection is None:
            return None
        missing = sum(s.objects is None for s in self.train.samples)
        if missing:
            raise ConfigError(
                f"{self.data_dir}/train: {missing} of {len(self.train)} samples have no object list, "
                f"and model {model.name!r} has a detection head, which trains on object lists"
            )
        return SetCriterion(head=model.detection, config=self.config.set_loss, mean=self.mean)

    def _init_position_head(self) -> None:
        """Start the position head at the mean object position. Targets are tens of metres: Adam
        moves a bias by about `lr` per step, so from zero it would take thousands of steps to
        reach them, and meanwhile the position loss would swamp the classification loss."""
        head = self.model.position_head
        known = [s.target_position for s in self.train.samples if s.target_position is not None]
        if head is not None and known:
            with torch.no_grad():
                head.bias.copy_(torch.tensor(np.mean(known, axis=0), dtype=head.bias.dtype))

    def batch_indices(self, step: int) -> np.ndarray:
        """This rank's sample indices for global step `step`."""
        b = self.config.batch_size
        epoch, k = divmod(step, self.steps_per_epoch)
        perm = np.random.default_rng([self.config.seed, epoch]).permutation(len(self.train))
        return perm[k * b : (k + 1) * b][self.rank :: self.world_size]

    def resume(self) -> int:
        """Load the newest checkpoint of the run directory; returns its step (0: none)."""
        found = latest_checkpoint(self.run_dir)
        if found is None:
            return 0
        model_path, state_path = found
        _, state, meta = read_checkpoint(model_path)
        saved = meta.get(_CONFIG_KEY)
        if saved is not None and json.loads(saved) != self.config.model_dump(mode="json"):
            raise ConfigError(
                f"{model_path}: written by a different training config; resume with the same config "
                f"or use another run directory"
            )
        try:
            self.model.load_state_dict(state, strict=True)
        except RuntimeError as err:
            raise CheckpointError(f"{model_path}: weights do not match the model: {err}") from None
        step = load_state(self.optimizer, state_path)
        log.info("resumed %s at step %d", model_path, step)
        return step

    def run(
        self,
        *,
        resume: bool = False,
        until: int | None = None,
        report: Callable[[dict[str, float]], None] | None = None,
    ) -> TrainResult:
        """Train to the end (or to step `until`, as if interrupted there); returns a summary."""
        cfg = self.config
        start = self.resume() if resume else 0
        if not resume and latest_checkpoint(self.run_dir) is not None and self.rank == 0:
            log.warning("%s already holds checkpoints; starting from scratch anyway", self.run_dir)
        stop = self.total_steps if until is None else min(until, self.total_steps)
        lead = self.rank == 0
        self.net.train()
        ema_loss = ema_acc = math.nan
        seen, busy = 0, 0.0
        last_ckpt: Path | None = None
        val_acc: float | None = None
        bar = tqdm(
            total=self.total_steps,
            initial=start,
            unit="step",
            desc=cfg.name,
            disable=not (self.progress and lead),
        )
        for step in range(start, stop):
            t0 = time.perf_counter()
            lr = lr_at(cfg, step, self.total_steps)
            for group in self.optimizer.param_groups:
                group["lr"] = lr
            torch.manual_seed(step_seed(cfg.seed, step, self.rank))
            batch = [self.train.samples[i] for i in self.batch_indices(step)]
            loss, logits = loss_fn(self.net, batch, cfg, self.criterion, self.mean)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.grad_clip:
                nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip)
            self.optimizer.step()
            busy += time.perf_counter() - t0
            seen += len(batch) * self.world_size
            acc = float((logits.argmax(-1) == targets(batch)[0]).float().mean())
            loss_value = float(loss.detach())
            ema_loss = loss_value if math.isnan(ema_loss) else 0.95 * ema_loss + 0.05 * loss_value
            ema_acc = acc if math.isnan(ema_acc) else 0.95 * ema_acc + 0.05 * acc
            done = step + 1
            bar.update(1)
            bar.set_postfix(
                loss=f"{ema_loss:.3f}", acc=f"{ema_acc:.3f}", lr=f"{lr:.1e}", sps=f"{seen / busy:.1f}"
            )
            metrics = {"step": done, "loss": loss_value, "acc": acc, "lr": lr, "samples_per_s": seen / busy}
            if (
                self.val is not None
                and cfg.val_every
                and (done % cfg.val_every == 0 or done == self.total_steps)
            ):
                val_acc = self.validate()
                metrics["val_acc"] = val_acc
            if lead and (done % cfg.log_every == 0 or "val_acc" in metrics):
                self._log(metrics)
            if done % cfg.checkpoint_every == 0 or done == self.total_steps:
                if lead:
                    last_ckpt = self.save(done)
                if self.distributed:
                    dist.barrier()
            if report is not None:
                report(metrics)
        bar.close()
        if stop == self.total_steps and lead and cfg.export:
            self.export(Path(cfg.export), val_acc=val_acc, samples_per_s=seen / busy if busy else math.nan)
        return TrainResult(
            steps=stop,
            samples=seen,
            seconds=busy,
            final_loss=ema_loss,
            final_accuracy=ema_acc,
            val_accuracy=val_acc,
            checkpoint=last_ckpt,
        )

    def validate(self) -> float:
        """All-modality accuracy on the validation samples (eval mode: no modality dropout)."""
        from fusion.training.evaluate import predict

        assert self.val is not None
        pred, _ = predict(self.model, self.val.samples, batch_size=64)
        self.net.train()
        return float(np.mean(pred == self.val.labels))

    def save(self, step: int) -> Path:
        """Write checkpoint `step` (model, then optimizer state) and prune old ones."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        model_path = self.run_dir / f"step-{step:07d}.safetensors"
        extra = {STEP_KEY: str(step), _CONFIG_KEY: self.config.model_dump_json()}
        atomic_write(model_path, lambda p: save_checkpoint(self.model, p, extra=extra))
        save_state(self.optimizer, model_path.with_name(model_path.stem + ".state.safetensors"), step=step)
        states = sorted(self.run_dir.glob("step-*.state.safetensors"))
        for old in states[: -self.config.keep_checkpoints]:
            old.unlink()
            old.with_name(old.name.replace(".state", "")).unlink(missing_ok=True)
        return model_path

    def export(self, path: Path, *, val_acc: float | None, samples_per_s: float) -> Path:
        """The final model, for shipping: weights and model config, plus how it was trained."""
        extra = {
            STEP_KEY: str(self.total_steps),
            _CONFIG_KEY: self.config.model_dump_json(),
            "fusion.train_samples_per_s": f"{samples_per_s:.2f}",
        }
        if val_acc is not None:
            extra["fusion.val_accuracy"] = f"{val_acc:.4f}"
        atomic_write(path, lambda p: save_checkpoint(self.model, p, extra=extra))
        log.info("exported %s", path)
        return path

    def _log(self, metrics: dict[str, float]) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        with (self.run_dir / "log.jsonl").open("a") as f:
            f.write(json.dumps({k: round(v, 6) for k, v in metrics.items()}) + "\n")


def train(
    config: TrainConfig,
    *,
    data_dir: str | Path | None = None,
    run_dir: str | Path | None = None,
    resume: bool = False,
    progress: bool = True,
) -> TrainResult:
    """Train in this process (see `pipelines.train` for Ray Train across workers)."""
    return Trainer(config, data_dir=data_dir, run_dir=run_dir, progress=progress).run(resume=resume)
