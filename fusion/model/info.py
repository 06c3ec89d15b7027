"""Model facts for `fusion model info`: parameters, FLOPs per sample, layer layout."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from fusion.model.config import ModelConfig, PositionKind
from fusion.model.detection import DetectionDecoder
from fusion.model.multimodal import ModalityInput
from fusion.model.perceiver import Perceiver
from fusion.sample import Modality


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def example_shapes(config: ModelConfig) -> dict[Modality, tuple[int, ...]]:
    """Each modality's `example_shape` from the config."""
    return {m: tuple(config.inputs[m].example_shape) for m in config.modalities}


def example_inputs(
    config: ModelConfig,
    shapes: Mapping[Modality, Sequence[int]],
    *,
    batch: int = 1,
    device: torch.device | str = "cpu",
    generator: torch.Generator | None = None,
) -> dict[Modality, ModalityInput]:
    """Random inputs of the given shapes (grid sizes, or [num_points]) for smoke runs and FLOPs."""
    out = {}
    for m, shape in shapes.items():
        cfg = config.inputs[m]
        rows = math.prod(shape)
        values = torch.rand(batch, rows, cfg.channels, generator=generator).to(device)
        if cfg.kind is PositionKind.GRID:
            out[m] = ModalityInput(values=values, grid=tuple(shape))
        else:
            pos = (torch.rand(batch, rows, cfg.pos_dims, generator=generator) * 2 - 1).to(device)
            out[m] = ModalityInput(values=values, positions=pos)
    return out


def count_flops(config: ModelConfig, shapes: Mapping[Modality, Sequence[int]], *, fast: bool) -> int:
    """FLOPs of one forward pass for one sample (multiplies and adds counted apart).

    Counted on the meta device, so even the paper's 700-GFLOP model costs nothing to count.
    `fast=False` counts the plain path (the paper's accounting); `fast=True` what inference
    executes: constant K/V parts cached, K/V reused by shared cross-attends.
    """
    with torch.device("meta"):
        model = Perceiver(config.model_copy(update={"kv_fast_path": fast}))
        inputs = example_inputs(config, shapes, device="meta")
    # Frozen rather than no_grad: FlopCounterMode's module tracker needs grad mode on.
    model.eval().requires_grad_(False)
    if fast:
        model(inputs)  # fills the constant-part caches, as a running model would have
    with FlopCounterMode(display=False) as counter:
        model(inputs)
    return int(counter.get_total_flops())


def layout_lines(model: Perceiver, shapes: Mapping[Modality, Sequence[int]]) -> list[str]:
    """Human-readable structure: byte array per modality, latents, iterations, heads."""
    cfg = model.config
    lines = [f"byte array: width C = {cfg.input_width} channels per row"]
    for m in cfg.modalities:
        ic = cfg.inputs[m]
        enc = model.adapter.encoders[m.value]
        shape = "x".join(map(str, shapes.get(m, ic.example_shape)))
        axes = f", last of {ic.pos_dims} position axes is time" if ic.time_axis else ""
        rows = math.prod(shapes.get(m, ic.example_shape))
        lines.append(
            f"  {m.value:<10} {ic.kind.value:<6} {shape:>9} -> {rows} rows = {ic.channels} values"
            f" + {ic.fourier_channels} Fourier ({ic.num_bands} bands{axes}) + {enc.pad_width} modality embedding"
        )
    lines.append(f"latents: {cfg.num_latents} x {cfg.latent_dim} ({model.latents.numel():,} params)")
    for j, cross in enumerate(model.cross):
        users = [i + 1 for i in range(cfg.num_cross_attends) if model.cross_index(i) == j]
        lines.append(
            f"cross_attend[{j}]: {cross.heads} head(s), qk {cross.qk_channels}, v {cross.v_channels}, "
            f"widening {cfg.cross_widening}; {count_parameters(cross):,} params; used by iteration(s) {_ranges(users)}"
        )
    for b, block in enumerate(model.blocks):
        users = [i + 1 for i in range(cfg.num_cross_attends) if b in model.block_indices(i)]
        lines.append(
            f"latent_block[{b}]: {block.heads} heads, widening {cfg.self_widening}; "
            f"{count_parameters(block):,} params; used by iteration(s) {_ranges(users)}"
        )
    lines.append(
        f"classifier: mean of latents -> {cfg.num_classes} classes ({count_parameters(model.classifier):,} params)"
    )
    if model.position_head is not None:
        lines.append(f"position head: mean of latents -> {cfg.position_dims}-D position")
    if model.detector is not None:
        lines.append(_detector_line(model.detector))
    lines.append(f"adapter (modality embeddings): {count_parameters(model.adapter):,} params")
    return lines


def _detector_line(detector: DetectionDecoder) -> str:
    det = detector.config
    return (
        f"detection head: {det.num_queries} queries x {det.layers} decoder layer(s) over the final latents "
        f"({det.heads} heads) -> {det.num_classes} classes + nothing, box (x, y, z, l, w, h, yaw, vx, vy); "
        f"{count_parameters(detector):,} params"
    )


def _ranges(items: list[int]) -> str:
    if len(items) > 2 and items == list(range(items[0], items[-1] + 1)):
        return f"{items[0]}-{items[-1]}"
    return ", ".join(map(str, items))
