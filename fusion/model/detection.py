"""Set prediction (issue 24): learned object queries read the final latents, as in Perceiver IO
and DETR, and each query predicts a class ("nothing" included) and a 3-D box.

The box parameterization is in `fusion.model.detection_config` (raw outputs of order one,
decoded to metres, radians and m/s). A detection's score is the probability of its most likely
object class (DETR's post-processing): a query unsure between two classes scores lower than
one sure of either, and `1 - p(nothing)` would hide that.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from fusion.detection.boxes import Box3D
from fusion.errors import InputError
from fusion.model.attention import MLP, SelfAttention, merge_heads, split_heads
from fusion.model.detection_config import NOTHING, DetectionHeadConfig

__all__ = [
    "NOTHING",
    "RAW_BOX_DIMS",
    "DetectionDecoder",
    "DetectionHeadConfig",
    "DetectionOutput",
    "decode_boxes",
    "encode_boxes",
    "to_objects",
]

RAW_BOX_DIMS = 10  # centre 3, log-size 3, (sin, cos) of yaw 2, velocity 2
BOX_DIMS = 9  # decoded: x, y, z, l, w, h, yaw, vx, vy


@dataclass
class DetectionOutput:
    """The decoder's set of Q predictions for a batch.

    Attributes:
        logits: [B, Q, C + 1] class logits; index C is "nothing".
        boxes: [B, Q, 9] decoded (x, y, z, l, w, h, yaw, vx, vy): metres, radians in (-pi, pi], m/s.
        raw: [B, Q, 10] the raw box outputs that `boxes` decode (what the set loss compares).
        aux: the same for each decoder layer before the last, in layer order (training only;
            empty in eval mode), for auxiliary set losses.
    """

    logits: torch.Tensor
    boxes: torch.Tensor
    raw: torch.Tensor
    aux: list[DetectionOutput] = field(default_factory=list)


class QueryCrossAttention(nn.Module):
    """Queries attend to the latents: LN on both, multi-head SDPA, residual, then MLP."""

    def __init__(self, *, dim: int, heads: int, widening: int, dropout: float) -> None:
        super().__init__()
        self.heads = heads
        self.q_norm = nn.LayerNorm(dim)
        self.kv_norm = nn.LayerNorm(dim)
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, 2 * dim)
        self.out = nn.Linear(dim, dim)
        self.drop = nn.Dropout(dropout)
        self.mlp = MLP(dim, widening, dropout)

    def forward(self, q: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """q: [B, Q, D] queries, z: [B, N, D] latents -> [B, Q, D]."""
        qh = split_heads(self.q(self.q_norm(q)), self.heads)  # (B, h, Q, D/h)
        kv = self.kv(self.kv_norm(z)).chunk(2, dim=-1)
        k, v = (split_heads(t, self.heads) for t in kv)  # (B, h, N, D/h)
        x = F.scaled_dot_product_attention(qh, k, v)  # (B, h, Q, D/h)
        q = q + self.drop(self.out(merge_heads(x)))
        return q + self.mlp(q)


class DecoderLayer(nn.Module):
    """Cross-attend to the latents, then let the queries see each other (no two claim one object)."""

    def __init__(self, *, dim: int, heads: int, widening: int, dropout: float) -> None:
        super().__init__()
        self.cross = QueryCrossAttention(dim=dim, heads=heads, widening=widening, dropout=dropout)
        self.self_attend = SelfAttention(dim=dim, heads=heads, widening=widening, dropout=dropout)

    def forward(self, q: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """q: [B, Q, D], z: [B, N, D] -> [B, Q, D]."""
        return self.self_attend(self.cross(q, z))


class DetectionDecoder(nn.Module):
    """Learned queries [Q, D] -> `layers` decoder layers over the latents -> class and box heads.

    The heads (LayerNorm, a linear class head, a two-layer box MLP) are shared by every layer,
    as in DETR, so an auxiliary loss on an early layer trains the same heads.
    """

    def __init__(self, config: DetectionHeadConfig, *, latent_dim: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.config = config
        self.queries = nn.Parameter(torch.empty(config.num_queries, latent_dim))
        nn.init.trunc_normal_(self.queries, std=0.02)
        self.layers = nn.ModuleList(
            DecoderLayer(dim=latent_dim, heads=config.heads, widening=config.widening, dropout=dropout)
            for _ in range(config.layers)
        )
        self.norm = nn.LayerNorm(latent_dim)
        self.class_head = nn.Linear(latent_dim, config.num_classes + 1)
        self.box_head = nn.Sequential(
            nn.Linear(latent_dim, latent_dim), nn.GELU(), nn.Linear(latent_dim, RAW_BOX_DIMS)
        )
        self._init_box_head()

    def _init_box_head(self) -> None:
        """Start every box at the reference box: centre at the offset, size_ref, yaw 0, at rest.

        The box head's last layer starts at zero weights (it still learns: its gradient is its
        input), with the cos-of-yaw bias 1, so the first steps move boxes from a sane prior
        instead of from random metres, and (sin, cos) starts away from atan2's singular origin.
        """
        last = self.box_head[-1]
        assert isinstance(last, nn.Linear)
        with torch.no_grad():
            last.weight.zero_()
            last.bias.zero_()
            last.bias[7] = 1.0

    def forward(self, z: torch.Tensor) -> DetectionOutput:
        """z: [B, N, D] final latents -> the set of Q predictions (aux per layer when training)."""
        q = self.queries.expand(z.shape[0], -1, -1)  # (B, Q, D)
        outputs = []
        for i, layer in enumerate(self.layers):
            q = layer(q, z)
            if self.training or i == len(self.layers) - 1:
                outputs.append(self._predict(q))
        final = outputs[-1]
        final.aux = outputs[:-1]
        return final

    def _predict(self, q: torch.Tensor) -> DetectionOutput:
        """q: [B, Q, D] -> logits [B, Q, C + 1], raw [B, Q, 10], boxes [B, Q, 9]."""
        h = self.norm(q)
        raw = self.box_head(h)
        return DetectionOutput(logits=self.class_head(h), boxes=decode_boxes(raw, self.config), raw=raw)


def _vector(values: Sequence[float], like: torch.Tensor) -> torch.Tensor:
    return torch.tensor(values, dtype=like.dtype, device=like.device)


def decode_boxes(raw: torch.Tensor, config: DetectionHeadConfig) -> torch.Tensor:
    """raw [..., 10] -> boxes [..., 9] (x, y, z, l, w, h, yaw, vx, vy); see `detection_config`."""
    center = _vector(config.center_offset_m, raw) + _vector(config.center_scale_m, raw) * raw[..., 0:3]
    log_size = raw[..., 3:6].clamp(-config.max_log_size, config.max_log_size)
    size = _vector(config.size_ref_m, raw) * log_size.exp()
    yaw = torch.atan2(raw[..., 6], raw[..., 7])
    yaw = torch.where(yaw <= -math.pi, yaw + 2 * math.pi, yaw)  # atan2(-0.0, -1) is -pi
    velocity = config.velocity_scale_mps * raw[..., 8:10]
    return torch.cat([center, size, yaw.unsqueeze(-1), velocity], dim=-1)


def encode_boxes(
    boxes: Sequence[Box3D],
    config: DetectionHeadConfig,
    *,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Boxes -> [n, 10] in the raw parameterization, the inverse of `decode_boxes` (up to the
    size clamp); yaw as (sin, cos), so headings a full turn apart encode alike."""
    if not boxes:
        return torch.zeros(0, RAW_BOX_DIMS, dtype=dtype, device=device)
    center = torch.tensor([b.center for b in boxes], dtype=torch.float64)  # (n, 3)
    size = torch.tensor([b.size for b in boxes], dtype=torch.float64)
    yaw = torch.tensor([b.yaw for b in boxes], dtype=torch.float64)
    velocity = torch.tensor([b.velocity for b in boxes], dtype=torch.float64)
    offset, scale = (
        torch.tensor(v, dtype=torch.float64) for v in (config.center_offset_m, config.center_scale_m)
    )
    ref = torch.tensor(config.size_ref_m, dtype=torch.float64)
    raw = torch.cat(
        [
            (center - offset) / scale,
            (size / ref).log(),
            yaw.sin().unsqueeze(1),
            yaw.cos().unsqueeze(1),
            velocity / config.velocity_scale_mps,
        ],
        dim=1,
    )
    return raw.to(dtype=dtype, device=device)


def to_objects(output: DetectionOutput, classes: Sequence[str], *, min_score: float) -> list[list[Box3D]]:
    """Per sample, the detections scoring at least `min_score`, highest score first.

    A query's class is its most likely object class and its score that class's probability
    (softmax over the C + 1 logits, "nothing" included). Ties keep query order.
    """
    c = output.logits.shape[-1] - 1
    if len(classes) != c:
        raise InputError(f"classes has {len(classes)} names, the detection head {c} object classes")
    if not 0.0 <= min_score <= 1.0:
        raise InputError(f"min_score is {min_score}: it must be in [0, 1]")
    probs = output.logits.detach().float().softmax(dim=-1)[..., :c]  # (B, Q, C)
    scores, labels = probs.max(dim=-1)  # (B, Q)
    boxes = output.boxes.detach().double().cpu().tolist()
    result = []
    for sample_scores, sample_labels, sample_boxes in zip(
        scores.cpu().tolist(), labels.cpu().tolist(), boxes, strict=True
    ):
        order = sorted(range(len(sample_scores)), key=lambda q: -sample_scores[q])
        result.append(
            [
                _box(classes[sample_labels[q]], min(sample_scores[q], 1.0), sample_boxes[q])
                for q in order
                if sample_scores[q] >= min_score
            ]
        )
    return result


def _box(class_name: str, score: float, values: list[float]) -> Box3D:
    """One decoded row (x, y, z, l, w, h, yaw, vx, vy) as a scored Box3D."""
    x, y, z, length, width, height, yaw, vx, vy = values
    return Box3D(
        class_name=class_name,
        center=(x, y, z),
        size=(length, width, height),
        yaw=yaw,
        velocity=(vx, vy),
        score=score,
    )
