"""The losses of `fusion train`: the one-label loss (class and position) and, for a model with a
detection head, the set loss beside it (`fusion.training.set_loss`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import torch
import torch.nn.functional as F
from torch import nn

from fusion.errors import ConfigError
from fusion.model import PerceiverOutput, collate
from fusion.sample import FusedSample
from fusion.training.set_loss import GlobalMean, SetCriterion, sample_objects


class LossWeights(Protocol):
    """What the losses read of a `TrainConfig` (a protocol, so this module needs no train.py)."""

    @property
    def position_weight(self) -> float: ...
    @property
    def huber_delta_m(self) -> float: ...
    @property
    def label_weight(self) -> float: ...


def targets(samples: Sequence[FusedSample]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(labels [B] int64, positions [B, 3] float32 (zeros where none), has_position [B] bool)."""
    labels = torch.tensor([s.label for s in samples], dtype=torch.int64)
    pos = torch.tensor(
        [s.target_position if s.target_position is not None else (0.0, 0.0, 0.0) for s in samples],
        dtype=torch.float32,
    )
    has = torch.tensor([s.target_position is not None for s in samples], dtype=torch.bool)
    return labels, pos, has


def loss_fn(
    model: nn.Module,
    samples: Sequence[FusedSample],
    config: LossWeights,
    criterion: SetCriterion | None = None,
    mean: GlobalMean | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(total loss, logits [B, classes]) of this worker's share of a batch; with `criterion`, the
    set loss is added. `mean` normalizes by counts over the whole global batch (one process: None)."""
    out = model(collate([s.segments for s in samples]))
    loss = label_loss(out, samples, config, mean or GlobalMean())
    if criterion is None:
        return loss, out.logits
    if out.detections is None:
        raise ConfigError("a set loss was asked for, but the model has no detection head (model.detection)")
    set_loss = criterion(out.detections, sample_objects(samples))["total"]
    return config.label_weight * loss + set_loss, out.logits


def label_loss(
    out: PerceiverOutput, samples: Sequence[FusedSample], config: LossWeights, mean: GlobalMean
) -> torch.Tensor:
    """Cross-entropy on the class plus the weighted Huber loss on the position of a batch (the
    mean over the global batch's samples with an object, however they fall between workers)."""
    labels, pos, has = targets(samples)
    loss = F.cross_entropy(out.logits, labels)
    if out.position is not None and config.position_weight > 0:
        # A batch without any object still touches the head, so DDP sees every parameter used.
        pos_loss = (
            mean(
                F.huber_loss(out.position[has], pos[has], delta=config.huber_delta_m, reduction="sum"),
                float(has.sum()) * out.position.shape[1],
                floor=1.0,
            )
            if mean.world_size > 1 or has.any()
            else out.position.sum() * 0.0
        )
        loss = loss + config.position_weight * pos_loss
    return loss
