"""The multimodal adapter: per-modality inputs -> the Perceiver's byte array.

Each row of the byte array is `[values | Fourier(positions) | modality padding]`, padded to the
common width C with a learned per-modality embedding (as the paper's AudioSet model and
DeepMind's MultimodalPreprocessor). Modalities are concatenated in `MODALITY_ORDER`.

The array is kept in a factored form, `ByteArray`: per modality a *varying* part (per sample)
and a *constant* part shared by every sample (grid Fourier features and the padding
embedding). `ByteArray.materialize()` gives the plain [B, M, C] tensor; the attention blocks
use the factored form to project the constant part once instead of once per sample.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from fusion.errors import InputError
from fusion.model.config import InputConfig, ModelConfig
from fusion.model.position_encoding import fourier_features, grid_positions
from fusion.sample import MODALITY_ORDER, Modality, Segment, parse_modality


@dataclass
class ModalityInput:
    """One modality's part of a batch.

    Attributes:
        values: [B, M, c] float values per row.
        positions: [B, M, d] in [-1, 1] for a points modality; None for a grid modality.
        grid: the grid shape for a grid modality (product M); None for points.
        mask: [B, M] bool, True where a row is real. None: every row of every sample is real.
            A sample without this modality has an all-False row of the mask.
    """

    values: torch.Tensor
    positions: torch.Tensor | None = None
    grid: tuple[int, ...] | None = None
    mask: torch.Tensor | None = None


@dataclass
class ByteChunk:
    """One modality's rows of the byte array, factored as `[varying | constant]`.

    Attributes:
        varying: [B, M, s] the per-sample channels.
        make_constant: builds the [R, C - s] channels shared by every sample (R is M or 1,
            broadcast). Lazy: when the projection of the constant part is cached, it is never built.
        cache_key: identifies the constant part while the parameters it depends on are unchanged,
            or None when it must not be cached.
        constant_needs_grad: whether the constant part depends on a parameter that trains.
    """

    varying: torch.Tensor
    make_constant: Callable[[], torch.Tensor]
    cache_key: Hashable | None
    constant_needs_grad: bool = False

    @functools.cached_property
    def constant(self) -> torch.Tensor:
        return self.make_constant()


@dataclass
class ByteArray:
    """The byte array of a batch: chunks in modality order and a key mask (True = real)."""

    chunks: list[ByteChunk]
    mask: torch.Tensor | None  # (B, M) or None when every row is real

    @property
    def rows(self) -> int:
        """M, the number of rows."""
        return sum(ch.varying.shape[1] for ch in self.chunks)

    def materialize(self) -> torch.Tensor:
        """The plain byte array [B, M, C]."""
        parts = []
        for ch in self.chunks:
            b, m, _ = ch.varying.shape
            const = ch.constant.expand(b, m, -1)  # (B, M, C - s)
            parts.append(torch.cat([ch.varying, const], dim=-1))
        return torch.cat(parts, dim=1)


class ModalityEncoder(nn.Module):
    """Builds one modality's ByteChunk; caches grid Fourier features per grid shape."""

    def __init__(self, modality: Modality, cfg: InputConfig, *, width: int) -> None:
        super().__init__()
        self.modality = modality
        self.cfg = cfg
        self.pad_width = width - cfg.width
        # Learned modality embedding filling the row up to the common width.
        self.padding = nn.Parameter(torch.empty(1, self.pad_width)) if self.pad_width else None
        if self.padding is not None:
            nn.init.trunc_normal_(self.padding, std=0.02)
        self._grid_cache: dict[tuple, torch.Tensor] = {}

    def _fourier(self, pos: torch.Tensor) -> torch.Tensor:
        return fourier_features(
            pos,
            num_bands=self.cfg.num_bands,
            max_resolution=self.cfg.max_resolution,
            concat_pos=self.cfg.concat_pos,
        )

    def grid_encoding(self, grid: tuple[int, ...], device, dtype) -> torch.Tensor:
        """Fourier features of a grid, [prod(grid), F]: computed once per (shape, device, dtype)."""
        key = (grid, str(device), dtype)
        enc = self._grid_cache.get(key)
        if enc is None:
            enc = self._fourier(grid_positions(grid, device=device, dtype=dtype))
            self._grid_cache[key] = enc
        return enc

    def forward(self, x: ModalityInput) -> ByteChunk:
        values = x.values  # (B, M, c)
        pad = self.padding
        pad_version = None if pad is None else (0 if pad.is_inference() else pad._version)
        needs_grad = self.padding is not None and self.padding.requires_grad
        if x.grid is not None:
            grid = x.grid

            def grid_constant() -> torch.Tensor:
                enc = self.grid_encoding(grid, values.device, values.dtype)  # (M, F)
                return torch.cat([enc, self._pad(values, enc.shape[0])], dim=-1)  # (M, F + pad)

            key: Hashable = (self.modality, grid, str(values.device), values.dtype, pad_version)
            return ByteChunk(values, grid_constant, key, needs_grad)
        assert x.positions is not None
        varying = torch.cat([values, self._fourier(x.positions)], dim=-1)  # (B, M, c + F)
        key = (self.modality, str(values.device), values.dtype, pad_version)
        return ByteChunk(varying, lambda: self._pad(values, 1), key, needs_grad)

    def _pad(self, like: torch.Tensor, rows: int) -> torch.Tensor:
        """The modality embedding for `rows` rows: [rows, pad_width] (pad_width may be 0)."""
        if self.padding is None:
            return like.new_zeros(rows, 0)
        return self.padding.to(like.dtype).expand(rows, -1)


class MultimodalAdapter(nn.Module):
    """Validates per-modality inputs and turns them into a `ByteArray`.

    Any non-empty subset of the configured modalities may be given; a modality absent from
    a sample contributes no rows to it (masked), which is not the same as zeros.
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.width = config.input_width
        self.modality_dropout = config.modality_dropout
        self.dropout_schedule = config.modality_dropout_schedule
        self.encoders = nn.ModuleDict(
            {m.value: ModalityEncoder(m, config.inputs[m], width=self.width) for m in config.modalities}
        )
        self.input_configs = dict(config.inputs)
        self.validate = True  # checks for NaN and range sync with the device; benchmarks may skip

    def forward(self, inputs: Mapping[Modality | str, ModalityInput]) -> ByteArray:
        batch = self._check(inputs)
        chunks, masks = [], []
        ordered = {parse_modality(k): v for k, v in inputs.items()}
        for modality in MODALITY_ORDER:
            if modality not in ordered:
                continue
            x = ordered[modality]
            chunks.append(self.encoders[modality.value](x))
            masks.append(x.mask)
        mask = self._combine_masks(masks, chunks, batch)
        return ByteArray(chunks=chunks, mask=mask)

    def _combine_masks(self, masks, chunks: list[ByteChunk], batch: int) -> torch.Tensor | None:
        if self.training and self.modality_dropout > 0:
            masks = self._drop_modalities(masks, chunks, batch)
        if all(m is None for m in masks):
            return None
        device = chunks[0].varying.device
        full = [
            torch.ones(batch, ch.varying.shape[1], dtype=torch.bool, device=device) if m is None else m
            for m, ch in zip(masks, chunks, strict=True)
        ]
        mask = torch.cat(full, dim=1)  # (B, M)
        if self.validate and device.type != "meta":
            empty = (~mask.any(dim=1)).nonzero().flatten().tolist()
            if empty:
                raise InputError(f"samples {empty} have no input rows from any modality")
        return mask

    def _drop_modalities(self, masks, chunks: list[ByteChunk], batch: int) -> list[torch.Tensor]:
        """Training only: drop each present modality of a sample with probability p, keeping one."""
        device = chunks[0].varying.device
        present = torch.stack(
            [
                torch.ones(batch, dtype=torch.bool, device=device) if m is None else m.any(dim=1)
                for m in masks
            ],
            dim=1,
        )  # (B, n_mod)
        if self.dropout_schedule == "subsets":
            keep = self._draw_subsets(present)
        else:
            keep = present & (torch.rand(present.shape, device=device) >= self.modality_dropout)
            # A sample that lost everything keeps one of its present modalities at random.
            lost = ~keep.any(dim=1)
            if lost.any():
                choice = torch.multinomial(present[lost].float(), 1).squeeze(1)
                keep[lost.nonzero().squeeze(1), choice] = True
        out = []
        for i, (m, ch) in enumerate(zip(masks, chunks, strict=True)):
            rows = ch.varying.shape[1]
            base = torch.ones(batch, rows, dtype=torch.bool, device=device) if m is None else m
            out.append(base & keep[:, i : i + 1])
        return out

    def _draw_subsets(self, present: torch.Tensor) -> torch.Tensor:
        """[B, n] present -> [B, n] kept: with probability p a uniform non-empty proper subset of
        each sample's present modalities (rejection sampling over fair coin flips), else all."""
        keep = present.clone()
        chosen = torch.rand(present.shape[0], device=present.device) < self.modality_dropout
        rows = (chosen & (present.sum(dim=1) > 1)).nonzero().squeeze(1)  # samples still to draw
        while len(rows):
            want = present[rows]
            draw = want & (torch.rand(want.shape, device=present.device) < 0.5)
            ok = draw.any(dim=1) & (draw != want).any(dim=1)
            keep[rows[ok]] = draw[ok]
            rows = rows[~ok]
        return keep

    def _check(self, inputs: Mapping[Modality | str, ModalityInput]) -> int:
        """Validate every modality's tensors; return the batch size."""
        if not inputs:
            raise InputError("no modality given: the byte array would be empty")
        sizes: dict[str, int] = {}
        for key, x in inputs.items():
            modality = parse_modality(key)
            if modality.value not in self.encoders:
                known = ", ".join(self.encoders.keys())
                raise InputError(f"{modality.value}: modality not configured for this model (has: {known})")
            sizes[modality.value] = _check_one(
                modality, self.input_configs[modality], x, validate=self.validate
            )
        if len(set(sizes.values())) > 1:
            shown = ", ".join(f"{m} {b}" for m, b in sizes.items())
            raise InputError(f"batch sizes differ across modalities: {shown}")
        return next(iter(sizes.values()))


def _check_one(modality: Modality, cfg: InputConfig, x: ModalityInput, *, validate: bool) -> int:
    name = modality.value
    v = x.values
    if v.ndim != 3:
        raise InputError(f"{name}: values must be [batch, rows, channels], got shape {tuple(v.shape)}")
    b, m, c = v.shape
    if m == 0:
        raise InputError(f"{name}: empty segment (0 rows)")
    if c != cfg.channels:
        raise InputError(f"{name}: expected {cfg.channels} value channels, got {c}")
    # Either kind may come as a grid or as explicit positions (mixed grids in one batch do).
    if (x.grid is None) == (x.positions is None):
        raise InputError(f"{name}: give exactly one of `grid` or `positions`")
    if x.grid is not None:
        if len(x.grid) != cfg.pos_dims or math.prod(x.grid) != m:
            raise InputError(f"{name}: grid input needs a {cfg.pos_dims}-D grid with {m} cells, got {x.grid}")
    else:
        p = x.positions
        if p is None or p.shape != (b, m, cfg.pos_dims):
            got = None if p is None else tuple(p.shape)
            raise InputError(f"{name}: positions must be [{b}, {m}, {cfg.pos_dims}], got {got}")
    if x.mask is not None and x.mask.shape != (b, m):
        raise InputError(f"{name}: mask must be [{b}, {m}], got {tuple(x.mask.shape)}")
    if validate and v.device.type != "meta":
        if not torch.isfinite(v).all():
            raise InputError(f"{name}: values contain NaN or inf")
        if x.positions is not None:
            if not torch.isfinite(x.positions).all():
                raise InputError(f"{name}: positions contain NaN or inf")
            if x.positions.abs().max() > 1.0 + 1e-6:
                raise InputError(
                    f"{name}: positions outside [-1, 1] (max |pos| {x.positions.abs().max():.4g})"
                )
    return b


def collate(
    samples: Sequence[Mapping[Any, Segment]],  # keys: Modality or its name
    *,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> dict[Modality, ModalityInput]:
    """Batch per-sample Segments into per-modality inputs, padding rows with a key mask.

    A modality missing from some samples is masked out for them. Grid segments of one
    modality that all share a grid stay a grid (cached encodings); mixed grids fall back to
    explicit positions so they can still share a batch.
    """
    if not samples:
        raise InputError("collate needs at least one sample")
    by_mod: dict[Modality, list[Segment | None]] = {}
    for i, sample in enumerate(samples):
        for key, seg in sample.items():
            by_mod.setdefault(parse_modality(key), [None] * len(samples))[i] = seg
    return {
        m: _collate_modality(m, by_mod[m], device=device, dtype=dtype) for m in MODALITY_ORDER if m in by_mod
    }


def _collate_modality(modality, segs: list[Segment | None], *, device, dtype) -> ModalityInput:
    real = [s for s in segs if s is not None]
    grids = {s.grid for s in real}
    if None not in grids and len(grids) == 1:
        grid = real[0].grid
        c = real[0].values.shape[1]
        values = np.zeros((len(segs), real[0].num_rows, c), dtype=np.float32)
        present = np.zeros((len(segs), 1), dtype=bool)
        for i, s in enumerate(segs):
            if s is not None:
                values[i], present[i] = s.values, True
        mask = None if present.all() else np.repeat(present, real[0].num_rows, axis=1)
        return ModalityInput(
            values=torch.as_tensor(values, dtype=dtype, device=device),
            grid=grid,
            mask=None if mask is None else torch.as_tensor(mask, device=device),
        )
    rows = max(s.num_rows for s in real)
    c = real[0].values.shape[1]
    d = max(len(s.grid) if s.grid is not None else s.positions.shape[1] for s in real)  # type: ignore[union-attr]
    values = np.zeros((len(segs), rows, c), dtype=np.float32)
    positions = np.zeros((len(segs), rows, d), dtype=np.float32)
    mask = np.zeros((len(segs), rows), dtype=bool)
    for i, s in enumerate(segs):
        if s is None:
            continue
        pos = s.positions if s.grid is None else grid_positions(s.grid).numpy()
        n = s.num_rows
        values[i, :n], positions[i, :n], mask[i, :n] = s.values, pos, True
    return ModalityInput(
        values=torch.as_tensor(values, dtype=dtype, device=device),
        positions=torch.as_tensor(positions, dtype=dtype, device=device),
        mask=None if mask.all() else torch.as_tensor(mask, device=device),
    )
