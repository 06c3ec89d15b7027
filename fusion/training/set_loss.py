"""The set loss of the detection head (DETR, Carion et al. 2020): match, then score the match.

Per sample, `HungarianMatcher` pairs queries with true objects at the least total cost
(`scipy.optimize.linear_sum_assignment`); `SetCriterion` then applies cross-entropy over all Q
queries (an unmatched query's target is "nothing", down-weighted by `nothing_weight`) and L1 on
the matched boxes, term by term in the raw parameterization of `fusion.model.detection_config`:
centre (/ scale), log-size, yaw as (sin, cos), velocity (/ scale). Every decoder layer's output
gets the same loss, matched on its own (auxiliary losses: the remedy for slow set convergence
chosen in docs/training.md).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field
from scipy.optimize import linear_sum_assignment

from fusion.config import StrictModel
from fusion.detection.boxes import Box3D
from fusion.errors import InputError
from fusion.model.detection import DetectionHeadConfig, DetectionOutput, encode_boxes
from fusion.sample import FusedSample


class GlobalMean:
    """A sum over this worker's share of a global batch, divided by the count over the whole
    global batch (DETR's all-reduced `num_boxes`), times the number of workers.

    DistributedDataParallel averages the workers' gradients, so with this every worker's loss
    has the gradient its share contributes to the one-process loss of the whole batch: two
    workers and one process take the same steps however the objects fall between them. With
    one worker it is `total / count`, exactly.

    Args:
        world_size: workers sharing each global batch.
        all_reduce: sums a tensor over the workers in place (`torch.distributed.all_reduce`);
            needed when `world_size` > 1.
    """

    def __init__(
        self, world_size: int = 1, all_reduce: Callable[[torch.Tensor], object] | None = None
    ) -> None:
        if world_size > 1 and all_reduce is None:
            raise InputError(f"world_size {world_size} needs an all_reduce to sum counts over the workers")
        self.world_size, self.all_reduce = world_size, all_reduce

    def __call__(self, total: torch.Tensor, count: torch.Tensor | float, *, floor: float) -> torch.Tensor:
        """`total` / (the global `count`, at least `floor`), scaled for DDP's average."""
        count = torch.as_tensor(count, dtype=total.dtype, device=total.device).detach().clone()
        if self.world_size == 1:
            return total / count.clamp_min(floor)
        assert self.all_reduce is not None
        self.all_reduce(count)
        return total * self.world_size / count.clamp_min(floor)


# The raw box's terms: name -> columns of the [.., 10] raw box.
BOX_TERMS: dict[str, slice] = {
    "center": slice(0, 3),
    "size": slice(3, 6),
    "yaw": slice(6, 8),
    "velocity": slice(8, 10),
}


class SetLossConfig(StrictModel):
    """Weights of the set loss and of the matching cost."""

    class_weight: float = Field(default=1.0, ge=0)  # cross-entropy over the Q queries
    nothing_weight: float = Field(default=0.1, ge=0)  # class weight of "nothing" (DETR's eos_coef)
    # L1 per box term, summed over the term's raw channels, averaged over the true objects.
    center_weight: float = Field(default=5.0, ge=0)  # raw centre: metres / center_scale_m
    size_weight: float = Field(default=1.0, ge=0)  # log(size / size_ref)
    yaw_weight: float = Field(default=1.0, ge=0)  # (sin, cos) of yaw
    velocity_weight: float = Field(default=1.0, ge=0)  # m/s / velocity_scale_mps
    aux_weight: float = Field(default=1.0, ge=0)  # each earlier decoder layer's loss, relative to the last
    # Matching cost: class_cost * (-p(true class)) + box_cost * (the term-weighted L1 above)
    # + bev_cost * (ground-plane centre distance in metres).
    class_cost: float = Field(default=1.0, ge=0)
    box_cost: float = Field(default=1.0, ge=0)
    bev_cost: float = Field(default=0.0, ge=0)

    def term_weight(self, term: str) -> float:
        return float(getattr(self, f"{term}_weight"))


@dataclass
class SetTargets:
    """One sample's true objects, ready for matching.

    Attributes:
        labels: [n] int64 class indices into the head's classes.
        raw: [n, 10] the boxes in the raw parameterization (`encode_boxes`).
        centers: [n, 3] box centres, metres.
    """

    labels: torch.Tensor
    raw: torch.Tensor
    centers: torch.Tensor

    def __len__(self) -> int:
        return int(self.labels.shape[0])


def set_targets(
    objects: Sequence[Sequence[Box3D]], head: DetectionHeadConfig, *, device: torch.device | str | None = None
) -> list[SetTargets]:
    """Per sample, its objects as `SetTargets` (class index by `head.classes.index(class_name)`)."""
    out = []
    for i, boxes in enumerate(objects):
        unknown = sorted({b.class_name for b in boxes} - set(head.classes))
        if unknown:
            raise InputError(
                f"sample {i} has objects of class {unknown}, not among the detection head's {head.classes}"
            )
        labels = torch.tensor([head.classes.index(b.class_name) for b in boxes], dtype=torch.int64)
        centers = torch.tensor([b.center for b in boxes], dtype=torch.float32).reshape(-1, 3)
        out.append(
            SetTargets(
                labels=labels.to(device),
                raw=encode_boxes(boxes, head, device=device),
                centers=centers.to(device),
            )
        )
    return out


def sample_objects(samples: Sequence[FusedSample]) -> list[list[Box3D]]:
    """The true object lists of a batch; an `InputError` names samples without one."""
    missing = [s.seq for s in samples if s.objects is None]
    if missing:
        raise InputError(
            f"samples (seq) {missing[:5]} carry no object list (FusedSample.objects is None): "
            "the detection head trains on object-labelled data"
        )
    return [list(s.objects or ()) for s in samples]


class HungarianMatcher:
    """The least-cost one-to-one pairing of queries and true objects, per sample."""

    def __init__(self, config: SetLossConfig) -> None:
        self.config = config

    @torch.no_grad()
    def __call__(
        self, output: DetectionOutput, targets: Sequence[SetTargets]
    ) -> list[tuple[np.ndarray, np.ndarray]]:
        """Per sample (query indices, object indices), each [min(Q, n)], ordered by query."""
        if len(targets) != output.logits.shape[0]:
            raise InputError(f"{len(targets)} target lists for a batch of {output.logits.shape[0]}")
        probs = output.logits.float().softmax(dim=-1)  # (B, Q, C + 1)
        matches = []
        for b, target in enumerate(targets):
            if not len(target):
                matches.append((np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)))
                continue
            cost = self.cost(probs[b], output.raw[b].float(), output.boxes[b].float(), target)  # (Q, n)
            rows, cols = linear_sum_assignment(cost.cpu().numpy())
            matches.append((rows.astype(np.int64), cols.astype(np.int64)))
        return matches

    def cost(
        self, probs: torch.Tensor, raw: torch.Tensor, boxes: torch.Tensor, target: SetTargets
    ) -> torch.Tensor:
        """probs [Q, C + 1], raw [Q, 10], boxes [Q, 9] of one sample -> cost [Q, n]."""
        cfg = self.config
        cost = -cfg.class_cost * probs[:, target.labels]  # (Q, n)
        for term, cols in BOX_TERMS.items():
            l1 = torch.cdist(raw[:, cols], target.raw[:, cols].float(), p=1)  # (Q, n)
            cost = cost + cfg.box_cost * cfg.term_weight(term) * l1
        if cfg.bev_cost:
            cost = cost + cfg.bev_cost * torch.cdist(boxes[:, :2], target.centers[:, :2].float())
        return cost


class SetCriterion:
    """The set loss of a `DetectionOutput` against per-sample object lists (see the module doc)."""

    def __init__(
        self, *, head: DetectionHeadConfig, config: SetLossConfig, mean: GlobalMean | None = None
    ) -> None:
        self.head = head
        self.config = config
        self.matcher = HungarianMatcher(config)
        self.mean = mean or GlobalMean()  # normalizes by counts over the whole global batch

    def __call__(
        self, output: DetectionOutput, objects: Sequence[Sequence[Box3D]]
    ) -> dict[str, torch.Tensor]:
        """Loss terms of the last layer ("class", "center", "size", "yaw", "velocity"), "aux" (the
        sum of the earlier layers' totals, unweighted) and "total" (what to minimize)."""
        targets = set_targets(objects, self.head, device=output.logits.device)
        losses = self.layer_loss(output, targets)
        aux = [self.layer_loss(layer, targets)["total"] for layer in output.aux]
        losses["aux"] = torch.stack(aux).sum() if aux else losses["total"].new_zeros(())
        losses["total"] = losses["total"] + self.config.aux_weight * losses["aux"]
        return losses

    def layer_loss(self, output: DetectionOutput, targets: Sequence[SetTargets]) -> dict[str, torch.Tensor]:
        """One decoder layer's weighted terms and their sum ("total")."""
        cfg = self.config
        matches = self.matcher(output, targets)
        losses = {"class": self._class_loss(output.logits, targets, matches)}
        pred = torch.cat([output.raw[b, rows] for b, (rows, _) in enumerate(matches)])  # (n, 10)
        true = torch.cat(
            [t.raw[torch.as_tensor(cols)] for t, (_, cols) in zip(targets, matches, strict=True)]
        )
        count = float(sum(len(t) for t in targets))
        for term, cols in BOX_TERMS.items():
            # Empty when no sample has objects: 0, still joined to the graph (DDP sees the head used).
            losses[term] = self.mean(
                (pred[:, cols] - true[:, cols].to(pred.dtype)).abs().sum(), count, floor=1.0
            )
        total = cfg.class_weight * losses["class"]
        for term in BOX_TERMS:
            total = total + cfg.term_weight(term) * losses[term]
        losses["total"] = total
        return losses

    def _class_loss(
        self,
        logits: torch.Tensor,
        targets: Sequence[SetTargets],
        matches: list[tuple[np.ndarray, np.ndarray]],
    ) -> torch.Tensor:
        """Cross-entropy of logits [B, Q, C + 1]: matched queries their object's class, others "nothing"."""
        nothing = logits.shape[-1] - 1
        wanted = torch.full(logits.shape[:2], nothing, dtype=torch.int64, device=logits.device)  # (B, Q)
        for b, (rows, cols) in enumerate(matches):
            wanted[b, torch.as_tensor(rows, device=logits.device)] = targets[b].labels[torch.as_tensor(cols)]
        weight = torch.ones(nothing + 1, dtype=logits.dtype, device=logits.device)
        weight[nothing] = self.config.nothing_weight
        summed = F.cross_entropy(logits.flatten(0, 1), wanted.flatten(), weight=weight, reduction="sum")
        # The weighted mean, as F.cross_entropy's, but 0 rather than 0/0 when every query is
        # "nothing" and nothing_weight is 0; over the whole global batch.
        return self.mean(summed, weight[wanted].sum(), floor=1e-12)
