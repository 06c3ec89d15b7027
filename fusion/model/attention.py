"""Attention blocks of the Perceiver: pre-LayerNorm, residual, GELU MLP, SDPA.

Attention goes through `torch.nn.functional.scaled_dot_product_attention`, so no N x M score
matrix is kept beyond what the fused kernel needs, and the cost is linear in the inputs M.
"""

from __future__ import annotations

import math
from typing import cast

import torch
import torch.nn.functional as F
from torch import nn

from fusion.model.multimodal import ByteArray, ByteChunk


class MLP(nn.Module):
    """LayerNorm, Linear(D, wD), GELU, Linear(wD, D): the paper's dense block (no residual)."""

    def __init__(self, dim: int, widening: int, dropout: float) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.LayerNorm(dim),
            nn.Linear(dim, widening * dim),
            nn.GELU(),
            nn.Linear(widening * dim, dim),
            nn.Dropout(dropout),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def split_heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    """[B, n, c] -> [B, heads, n, c / heads]."""
    b, n, c = x.shape
    return x.view(b, n, heads, c // heads).transpose(1, 2)  # (B, h, n, c/h)


def merge_heads(x: torch.Tensor) -> torch.Tensor:
    """[B, h, n, dh] -> [B, n, h * dh]."""
    b, h, n, dh = x.shape
    return x.transpose(1, 2).reshape(b, n, h * dh)  # (B, n, h*dh)


_CONSTANT_BLOCK_ROWS = 4096


class KVProjection(nn.Module):
    """K and V of the byte array: Linear(LayerNorm(x)) with one fused [C, qk+v] weight.

    The fast path never materializes the byte array. For a row x = [a | c] with a varying
    (per sample, width s) and c constant (shared, width C - s), LayerNorm's mean and variance
    are combined from the two parts' statistics (Chan et al.), and

        LN(x) W + b = rstd * (a (g_a * W_a) + (c * g_c) W_c - mu (g W)) + (beta W + b)

    where g, beta are LayerNorm's affine parameters. The constant term (c * g_c) W_c and the
    statistics of c are computed once per grid and cached while the parameters are unchanged,
    so the per-row cost is s x (qk + v) instead of C x (qk + v): it no longer grows with the
    number of Fourier bands.
    """

    def __init__(self, in_dim: int, out_dim: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(in_dim)
        self.proj = nn.Linear(in_dim, out_dim)
        self._const_cache: dict = {}

    def forward(self, byte: ByteArray, *, fast: bool, rows: tuple[int, int] | None = None) -> torch.Tensor:
        """Returns [B, M, out_dim], or [B, stop - start, out_dim] for `rows` = (start, stop)."""
        if rows is None:
            if not fast:
                return cast(torch.Tensor, self.proj(self.norm(byte.materialize())))
            parts = [self._project_chunk(ch) for ch in byte.chunks]
        else:
            parts = []
            offset = 0
            for ch in byte.chunks:
                m = ch.varying.shape[1]
                lo, hi = max(rows[0] - offset, 0), min(rows[1] - offset, m)
                if lo < hi:
                    if fast:
                        parts.append(self._project_chunk(ch, lo, hi))
                    else:
                        parts.append(self.proj(self.norm(_materialize_rows(ch, lo, hi))))
                offset += m
        return parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)

    def _param_version(self, device_type: str) -> tuple:
        """Changes whenever a parameter is updated in place, or autocast changes the compute dtype."""
        params = (self.norm.weight, self.norm.bias, self.proj.weight, self.proj.bias)
        # Inference tensors (built under inference_mode) have no version counter and cannot change.
        versions = tuple((0 if p.is_inference() else p._version, p.data_ptr()) for p in params)
        try:
            autocast = torch.is_autocast_enabled(device_type) and torch.get_autocast_dtype(device_type)
        except RuntimeError:  # a device autocast does not know (meta, when counting FLOPs)
            autocast = False
        return (*versions, autocast)

    def _constant_terms(self, ch: ByteChunk) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(mean [R], sum of squared deviations [R], projection [R, out]) of the constant part.

        Cached only when no gradient must flow through it: in training it is recomputed once
        per forward (still once per batch, not per sample).
        """
        needs_grad = torch.is_grad_enabled() and (self.proj.weight.requires_grad or ch.constant_needs_grad)
        cacheable = ch.cache_key is not None and not needs_grad
        key = (ch.cache_key, self._param_version(ch.varying.device.type))
        if cacheable and key in self._const_cache:
            return self._const_cache[key]
        s = ch.varying.shape[-1]
        c = ch.constant  # (R, C - s)
        if c.shape[-1] == 0:
            zero = c.new_zeros(c.shape[0])
            terms = (zero, zero, c.new_zeros(c.shape[0], self.proj.out_features))
        else:
            # In row blocks, so the temporaries stay small next to the cached [R, out] result.
            g, w = self.norm.weight[s:], self.proj.weight[:, s:].T
            block = c.shape[0] if needs_grad else _CONSTANT_BLOCK_ROWS
            means, m2s, projs = [], [], []
            for lo in range(0, c.shape[0], block):
                part = c[lo : lo + block]
                mean = part.mean(-1)
                means.append(mean)
                m2s.append((part - mean.unsqueeze(-1)).square().sum(-1))
                projs.append((part * g) @ w)  # (rows, out)
            terms = (torch.cat(means), torch.cat(m2s), torch.cat(projs))
        if cacheable:
            if len(self._const_cache) > 64:  # grid shapes in use are few; bound it anyway
                self._const_cache.clear()
            self._const_cache[key] = terms
        return terms

    def _project_chunk(self, ch: ByteChunk, lo: int = 0, hi: int | None = None) -> torch.Tensor:
        """K/V of rows [lo, hi) of one chunk (default: all of them)."""
        a = ch.varying[:, lo:hi]  # (B, m, s)
        s, width = a.shape[-1], self.norm.normalized_shape[0]
        n_a, n_c = s, width - s
        mean_c, m2_c, proj_c = self._constant_terms(ch)
        if mean_c.shape[0] > 1:  # one constant row per input row (a grid): the same rows
            mean_c, m2_c, proj_c = mean_c[lo:hi], m2_c[lo:hi], proj_c[lo:hi]
        gamma, weight = self.norm.weight, self.proj.weight  # (C,), (out, C)
        mean_a = a.mean(-1)  # (B, M)
        m2_a = (a - mean_a.unsqueeze(-1)).square().sum(-1)  # (B, M)
        delta = mean_c - mean_a
        mean = mean_a + delta * (n_c / width)
        var = (m2_a + m2_c + delta.square() * (n_a * n_c / width)) / width
        rstd = torch.rsqrt(var + self.norm.eps)  # (B, M)
        # One batched matmul folds the varying part, -mean * (g W) and bias / rstd together:
        # [a | mean | 1/rstd] @ [g_a * W_a ; -(g W) ; beta W + b], plus the constant projection.
        lhs = torch.cat([a, mean.unsqueeze(-1), rstd.reciprocal().unsqueeze(-1)], dim=-1)  # (B, M, s+2)
        rhs = torch.cat(
            [
                (weight[:, :s] * gamma[:s]).T,  # (s, out)
                -(weight @ gamma).unsqueeze(0),  # (1, out)
                (weight @ self.norm.bias + self.proj.bias).unsqueeze(0),  # (1, out)
            ],
            dim=0,
        )
        y = torch.matmul(lhs, rhs)  # (B, M, out)
        if torch.is_grad_enabled():
            return (y + proj_c) * rstd.unsqueeze(-1)
        # Inference: in place, so the largest tensor of the forward exists once, not three times.
        return y.add_(proj_c).mul_(rstd.unsqueeze(-1))


def _materialize_rows(ch: ByteChunk, lo: int, hi: int) -> torch.Tensor:
    """Rows [lo, hi) of one chunk of the plain byte array: [B, hi - lo, C]."""
    a = ch.varying[:, lo:hi]
    c = ch.constant if ch.constant.shape[0] == 1 else ch.constant[lo:hi]
    return torch.cat([a, c.expand(a.shape[0], a.shape[1], -1)], dim=-1)


class CrossAttention(nn.Module):
    """Latents attend to the byte array: LN on both, Q from latents, K/V from bytes, residual, MLP."""

    def __init__(
        self,
        *,
        latent_dim: int,
        input_dim: int,
        qk_channels: int,
        v_channels: int,
        heads: int,
        widening: int,
        dropout: float,
    ) -> None:
        super().__init__()
        self.heads, self.qk_channels, self.v_channels = heads, qk_channels, v_channels
        self.q_norm = nn.LayerNorm(latent_dim)
        self.q = nn.Linear(latent_dim, qk_channels)
        self.kv = KVProjection(input_dim, qk_channels + v_channels)
        self.out = nn.Linear(v_channels, latent_dim)
        self.drop = nn.Dropout(dropout)
        self.mlp = MLP(latent_dim, widening, dropout)

    def forward(self, z: torch.Tensor, kv: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """z: [B, N, D] latents; kv: [B, M, qk+v] from `self.kv`; mask: [B, M] True = real."""
        q = split_heads(self.q(self.q_norm(z)), self.heads)  # (B, h, N, qk/h)
        k, v = kv.split([self.qk_channels, self.v_channels], dim=-1)
        k, v = split_heads(k, self.heads), split_heads(v, self.heads)  # (B, h, M, */h)
        attn_mask = None if mask is None else mask[:, None, None, :]  # (B, 1, 1, M)
        x = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)  # (B, h, N, v/h)
        return self._finish(z, x)

    def forward_chunked(self, z: torch.Tensor, byte: ByteArray, *, rows: int, fast: bool) -> torch.Tensor:
        """The same as `forward(z, self.kv(byte), byte.mask)`, `rows` input rows at a time.

        An online softmax (running max, running sum, rescaled accumulator) merges the pieces,
        so only [B, h, N, rows] scores and [B, rows, qk+v] K/V exist at once. For inference:
        autograd would keep every piece anyway.
        """
        q = split_heads(self.q(self.q_norm(z)), self.heads)  # (B, h, N, qk/h)
        q = q * q.shape[-1] ** -0.5
        b, h, n, _ = q.shape
        running_max = q.new_full((b, h, n, 1), -math.inf)
        total = q.new_zeros((b, h, n, 1))
        acc = q.new_zeros((b, h, n, self.v_channels // self.heads))
        m = byte.rows
        for start in range(0, m, rows):
            stop = min(start + rows, m)
            k, v = self.kv(byte, fast=fast, rows=(start, stop)).split(
                [self.qk_channels, self.v_channels], dim=-1
            )
            scores = q @ split_heads(k, self.heads).transpose(-1, -2)  # (B, h, N, m)
            if byte.mask is not None:
                keep = byte.mask[:, None, None, start:stop]
                scores = scores.masked_fill_(~keep, -math.inf)
            new_max = torch.maximum(running_max, scores.amax(-1, keepdim=True))
            # A piece whose rows are all padding for a sample: keep exp() away from -inf - -inf.
            safe = torch.where(torch.isinf(new_max), torch.zeros_like(new_max), new_max)
            p = scores.sub_(safe).exp_()  # in place: the scores are not needed again
            rescale = torch.exp(running_max - safe)
            total = total * rescale + p.sum(-1, keepdim=True)
            acc = acc * rescale + p @ split_heads(v, self.heads)
            running_max = new_max
        return self._finish(z, acc / total)

    def _finish(self, z: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Output projection, residual and MLP of the attention result x: [B, h, N, v/h]."""
        z = z + self.drop(self.out(merge_heads(x)))
        return z + self.mlp(z)


class SelfAttention(nn.Module):
    """One latent transformer block: pre-LN multi-head self-attention and MLP, both residual."""

    def __init__(self, *, dim: int, heads: int, widening: int, dropout: float) -> None:
        super().__init__()
        self.heads = heads
        self.norm = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out = nn.Linear(dim, dim)
        self.drop = nn.Dropout(dropout)
        self.mlp = MLP(dim, widening, dropout)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """z: [B, N, D] -> [B, N, D]."""
        qkv = self.qkv(self.norm(z)).chunk(3, dim=-1)
        q, k, v = (split_heads(t, self.heads) for t in qkv)  # (B, h, N, D/h)
        x = F.scaled_dot_product_attention(q, k, v)
        z = z + self.drop(self.out(merge_heads(x)))
        return z + self.mlp(z)
