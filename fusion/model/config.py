"""Configuration of the Perceiver and of its per-modality inputs.

Defaults are the paper's choices; every departure is a named field.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Literal

from pydantic import Field, Strict, model_validator

from fusion.config import ModalityKey, StrictModel
from fusion.errors import InputError
from fusion.model.detection_config import DetectionHeadConfig
from fusion.model.position_encoding import num_fourier_channels
from fusion.sample import MODALITY_ORDER, Modality

DropoutSchedule = Literal["independent", "subsets"]  # see ModelConfig.modality_dropout_schedule


class PositionKind(StrEnum):
    """How a modality's rows are placed: on a fixed grid, or at explicit per-sample points."""

    GRID = "grid"
    POINTS = "points"


class InputConfig(StrictModel):
    """One modality's rows in the byte array: `[values | Fourier(positions) | padding]`."""

    kind: Annotated[PositionKind, Strict(False)]  # grid (image, spectrogram) or points (LiDAR)
    channels: int = Field(ge=1)  # c: value channels per row (RGB 3, log-mel 1, LiDAR 2)
    pos_dims: int = Field(ge=1)  # d: axes of a position (image 2, spectrogram 2, LiDAR 3)
    num_bands: int = Field(ge=1)  # K: Fourier bands per axis (paper ImageNet: 64)
    max_resolution: list[int]  # per axis; highest band is max_resolution / 2
    concat_pos: bool = True  # paper: raw positions are part of the encoding
    example_shape: list[int]  # grid: d sizes; points: [num_points]. Used for FLOPs and smoke runs.
    # Points only: the last of the pos_dims axes is time, so several sweeps can share one segment
    # (each point at t = 1 - 2 * age / window in [-1, 1], newest +1; its Fourier bands follow
    # that axis's max_resolution): what a detector needs to see motion. `fusion.model.temporal`.
    time_axis: bool = False

    @model_validator(mode="after")
    def _check_shapes(self) -> InputConfig:
        if len(self.max_resolution) != self.pos_dims:
            raise InputError(
                f"max_resolution has {len(self.max_resolution)} entries, pos_dims is {self.pos_dims}"
            )
        if self.time_axis and (self.kind is not PositionKind.POINTS or self.pos_dims < 2):
            raise InputError(
                f"time_axis needs a points input with a space axis before time (kind {self.kind.value}, "
                f"pos_dims {self.pos_dims})"
            )
        want = self.pos_dims if self.kind is PositionKind.GRID else 1
        if len(self.example_shape) != want or min(self.example_shape) < 1:
            raise InputError(
                f"example_shape {self.example_shape} must be {want} positive int(s) for a {self.kind.value} input"
            )
        return self

    @property
    def fourier_channels(self) -> int:
        return num_fourier_channels(self.pos_dims, self.num_bands, concat_pos=self.concat_pos)

    @property
    def width(self) -> int:
        """Channels of a row before padding: values plus Fourier features."""
        return self.channels + self.fourier_channels


class ModelConfig(StrictModel):
    """The Perceiver (Jaegle et al., ICML 2021) and its multimodal byte-array adapter."""

    name: str
    inputs: dict[ModalityKey, InputConfig] = Field(min_length=1)
    num_latents: int = Field(ge=1)  # N, the latent array's index dimension
    latent_dim: int = Field(ge=1)  # D, the latent array's channels
    num_cross_attends: int = Field(ge=1)  # iterations of (cross-attend, latent transformer)
    self_attends_per_block: int = Field(ge=0)  # latent self-attention blocks per iteration
    cross_heads: int = Field(default=1, ge=1)  # paper: 1
    self_heads: int = Field(default=8, ge=1)  # paper ImageNet: 8
    # Cross-attention Q/K width; None = the paper's min(byte-array width, latent width).
    cross_qk_channels: int | None = Field(default=None, ge=1)
    cross_v_channels: int | None = Field(default=None, ge=1)  # None = same as Q/K
    cross_widening: int = Field(default=1, ge=1)  # MLP hidden = widening * D; paper: 1
    self_widening: int = Field(default=1, ge=1)
    dropout: float = Field(default=0.0, ge=0.0, lt=1.0)
    share_cross_weights: bool = True  # paper: first cross-attend unshared, the others shared
    share_latent_weights: bool = True  # paper: latent blocks shared across iterations
    # Extra channels of learned per-modality padding beyond the widest modality (DeepMind's
    # MultimodalPreprocessor `min_padding_size`). 0 is allowed only for a single modality.
    min_padding: int = Field(default=4, ge=0)
    num_classes: int = Field(ge=1)
    class_names: list[str] | None = None
    position_dims: int = Field(default=0, ge=0)  # 0 = no position-regression head
    # The set-prediction head (issue 24): object queries over the final latents, each a class
    # and a box. None: only the classifier and position heads (the shipped one-label model).
    detection: DetectionHeadConfig | None = None
    modality_dropout: float = Field(default=0.0, ge=0.0, lt=1.0)  # training only; see the schedule
    # How `modality_dropout` = p drops modalities while training:
    #   independent: each present modality of a sample is dropped with probability p (one kept);
    #   subsets: with probability p a sample keeps a uniformly drawn non-empty proper subset of
    #     its present modalities, else all: every single sensor and every pair is trained as
    #     often as any other (at p = 0.75 with three sensors, each of the 7 subsets 1/8, all 1/4).
    modality_dropout_schedule: DropoutSchedule = "independent"
    # Project the constant part of the byte array (grid Fourier features, padding) once and
    # reuse K/V across weight-shared cross-attends. Exact; off only to measure the plain path.
    kv_fast_path: bool = True
    # Without autograd (inference), a byte array longer than this many rows is attended in
    # pieces of this many rows with an online softmax (the log-sum-exp merge of flash
    # attention): K/V of the whole array are never held, so peak memory no longer grows with M
    # (at the price of recomputing the cheap per-row K/V part for each shared cross-attend).
    # Exact up to float rounding. None: always the whole array at once, through SDPA.
    kv_chunk_rows: int | None = Field(default=2048, ge=1)

    @model_validator(mode="after")
    def _check(self) -> ModelConfig:
        if len(self.inputs) > 1 and self.min_padding < 1:
            raise InputError("min_padding must be >= 1 with several modalities, so each gets an embedding")
        if self.class_names is not None and len(self.class_names) != self.num_classes:
            raise InputError(
                f"class_names has {len(self.class_names)} names, num_classes is {self.num_classes}"
            )
        if self.latent_dim % self.self_heads:
            raise InputError(
                f"latent_dim ({self.latent_dim}) must be divisible by self_heads ({self.self_heads})"
            )
        if self.detection is not None and self.latent_dim % self.detection.heads:
            raise InputError(
                f"latent_dim ({self.latent_dim}) must be divisible by detection.heads ({self.detection.heads})"
            )
        for name, value in (
            ("cross_qk_channels", self.qk_channels),
            ("cross_v_channels", self.v_channels),
        ):
            if value % self.cross_heads:
                raise InputError(f"{name} ({value}) must be divisible by cross_heads ({self.cross_heads})")
        return self

    @property
    def modalities(self) -> tuple[Modality, ...]:
        """Configured modalities in the fixed byte-array order."""
        return tuple(m for m in MODALITY_ORDER if m in self.inputs)

    @property
    def input_width(self) -> int:
        """C, the common channel width of every byte-array row."""
        return max(cfg.width for cfg in self.inputs.values()) + self.min_padding

    @property
    def qk_channels(self) -> int:
        return self.cross_qk_channels or min(self.input_width, self.latent_dim)

    @property
    def v_channels(self) -> int:
        return self.cross_v_channels or self.qk_channels
