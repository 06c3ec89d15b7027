"""Configuration of the set-prediction head (issue 24): light, so `ModelConfig` validates without torch.

The box parameterization lives here because the decoder and the set loss must agree on it:
a query's raw box output r [10] decodes to the box (metres, radians, m/s) as

    centre (x, y, z) = center_offset_m + center_scale_m * r[0:3]
    size   (l, w, h) = size_ref_m * exp(clamp(r[3:6], -max_log_size, max_log_size))
    yaw              = atan2(r[6], r[7])               (r[6:8] ~ (sin, cos), in (-pi, pi])
    velocity (vx, vy) = velocity_scale_mps * r[8:10]

so every raw term is of order one for the objects the head is meant for, and the set loss
compares raw outputs with boxes encoded the same way (`fusion.model.detection.encode_boxes`).
"""

from __future__ import annotations

from pydantic import Field, model_validator

from fusion.config import StrictModel
from fusion.errors import InputError

NOTHING = "nothing"  # the implicit last class of every query: no object


class DetectionHeadConfig(StrictModel):
    """A Perceiver IO-style decoder: learned queries cross-attend to the final latents.

    Each of `layers` decoder layers: queries cross-attend to the latents (LayerNorm on both,
    SDPA, residual, MLP), then self-attend (pre-LN, residual, MLP). The same class and box heads
    read every layer's queries, so each layer can have its own (auxiliary) set loss.
    """

    classes: list[str] = Field(min_length=1)  # object classes, without "nothing" (it is implicit, last)
    num_queries: int = Field(default=8, ge=1)  # Q; at least 2 x the world's max_objects (4)
    layers: int = Field(default=2, ge=1)  # decoder layers
    heads: int = Field(default=4, ge=1)  # attention heads in the decoder (width: the latent width)
    widening: int = Field(default=1, ge=1)  # decoder MLP hidden = widening * latent width
    # Box parameterization (see the module docstring): metres, m/s.
    center_offset_m: list[float] = Field(default=[0.0, 0.0, 0.0], min_length=3, max_length=3)
    center_scale_m: list[float] = Field(default=[25.0, 25.0, 2.0], min_length=3, max_length=3)
    size_ref_m: list[float] = Field(default=[2.0, 1.0, 1.5], min_length=3, max_length=3)
    max_log_size: float = Field(default=4.0, gt=0)  # sizes within size_ref * e^(+-4)
    velocity_scale_mps: float = Field(default=5.0, gt=0)

    @model_validator(mode="after")
    def _check(self) -> DetectionHeadConfig:
        if len(set(self.classes)) != len(self.classes):
            dupes = sorted({c for c in self.classes if self.classes.count(c) > 1})
            raise InputError(f"detection.classes repeats {dupes}: class names must be unique")
        if NOTHING in self.classes or "" in self.classes:
            raise InputError(
                f"detection.classes {self.classes} holds {NOTHING!r} or an empty name: "
                f"{NOTHING!r} is every query's implicit last class"
            )
        for key in ("center_scale_m", "size_ref_m"):
            values = getattr(self, key)
            if min(values) <= 0:
                raise InputError(f"detection.{key} {values} must be positive")
        return self

    @property
    def num_classes(self) -> int:
        """C, the object classes; the class logits have C + 1 entries (the last is "nothing")."""
        return len(self.classes)
