"""The iterative Perceiver (Jaegle et al., "Perceiver: General Perception with Iterative
Attention", ICML 2021), multimodal through `MultimodalAdapter`."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import cast

import torch
from torch import nn

from fusion.model.attention import CrossAttention, SelfAttention
from fusion.model.config import ModelConfig
from fusion.model.detection import DetectionDecoder, DetectionOutput
from fusion.model.multimodal import ModalityInput, MultimodalAdapter
from fusion.sample import Modality


@dataclass
class PerceiverOutput:
    """logits: [B, num_classes]; position: [B, position_dims] or None without that head;
    detections: the object queries' predictions (logits [B, Q, C + 1], boxes [B, Q, 9]) when
    the model has a detection head, else None."""

    logits: torch.Tensor
    position: torch.Tensor | None
    detections: DetectionOutput | None = None


class Perceiver(nn.Module):
    """Latents [N, D] that cross-attend to the byte array, then refine themselves, repeatedly.

    `num_cross_attends` iterations of (cross-attend, `self_attends_per_block` latent blocks).
    With the paper's weight sharing, the first cross-attend has its own weights and the others
    share one module; latent blocks are shared across iterations. The classifier and position
    heads read the mean latent; the detection decoder's object queries read all final latents.
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.adapter = MultimodalAdapter(config)
        self.latents = nn.Parameter(torch.empty(config.num_latents, config.latent_dim))
        nn.init.trunc_normal_(self.latents, std=0.02)
        n_cross = min(config.num_cross_attends, 2) if config.share_cross_weights else config.num_cross_attends
        self.cross = nn.ModuleList(
            CrossAttention(
                latent_dim=config.latent_dim,
                input_dim=config.input_width,
                qk_channels=config.qk_channels,
                v_channels=config.v_channels,
                heads=config.cross_heads,
                widening=config.cross_widening,
                dropout=config.dropout,
            )
            for _ in range(n_cross)
        )
        n_blocks = config.self_attends_per_block * (
            1 if config.share_latent_weights else config.num_cross_attends
        )
        self.blocks = nn.ModuleList(
            SelfAttention(
                dim=config.latent_dim,
                heads=config.self_heads,
                widening=config.self_widening,
                dropout=config.dropout,
            )
            for _ in range(n_blocks)
        )
        self.classifier = nn.Linear(config.latent_dim, config.num_classes)
        self.position_head = (
            nn.Linear(config.latent_dim, config.position_dims) if config.position_dims else None
        )
        self.detector = (
            DetectionDecoder(config.detection, latent_dim=config.latent_dim, dropout=config.dropout)
            if config.detection is not None
            else None
        )
        self.kv_fast_path = config.kv_fast_path

    def cross_index(self, i: int) -> int:
        """Which cross-attention module iteration i uses."""
        return min(i, len(self.cross) - 1)

    def block_indices(self, i: int) -> range:
        """Which latent blocks iteration i runs."""
        per = self.config.self_attends_per_block
        start = 0 if self.config.share_latent_weights else i * per
        return range(start, start + per)

    def forward(self, inputs: Mapping[Modality | str, ModalityInput]) -> PerceiverOutput:
        """inputs: modality -> ModalityInput (any configured subset). Returns the heads' outputs."""
        z = self.encode(inputs)  # (B, N, D)
        pooled = z.mean(dim=1)  # (B, D)
        position = None if self.position_head is None else self.position_head(pooled)
        detections = None if self.detector is None else self.detector(z)
        return PerceiverOutput(logits=self.classifier(pooled), position=position, detections=detections)

    def encode(self, inputs: Mapping[Modality | str, ModalityInput]) -> torch.Tensor:
        """The final latents [B, N, D]: the iterated cross-attends and latent blocks."""
        byte = self.adapter(inputs)
        batch = byte.chunks[0].varying.shape[0]
        z = self.latents.expand(batch, -1, -1)  # (B, N, D)
        kv: torch.Tensor | None = None
        rows = self.config.kv_chunk_rows
        chunked = rows is not None and not torch.is_grad_enabled() and byte.rows > rows
        for i in range(self.config.num_cross_attends):
            j = self.cross_index(i)
            cross = cast(CrossAttention, self.cross[j])
            if chunked:
                assert rows is not None
                z = cross.forward_chunked(z, byte, rows=rows, fast=self.kv_fast_path)
            elif kv is None or j != self.cross_index(i - 1) or not self.kv_fast_path:
                # A shared cross-attend sees the same byte array every time: its K/V are identical.
                # Only the current module's K/V is held: the largest tensor of the forward, once.
                kv = None
                kv = cross.kv(byte, fast=self.kv_fast_path)  # (B, M, qk+v)
                z = cross(z, kv, byte.mask)
            else:
                z = cross(z, kv, byte.mask)
            for b in self.block_indices(i):
                z = self.blocks[b](z)
        return z
