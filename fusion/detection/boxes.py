"""One 3-D object, predicted or true, and the objects of many samples.

A box lives in the rig's base frame: x forward, y left, z up, metres; yaw is the heading of
the box's length axis about z, counter-clockwise from +x, in radians. Ground truth has no
score (`score=None`); a prediction's score is in [0, 1], as nuScenes requires.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from fusion.errors import InputError

SIZE_AXES = ("l", "w", "h")


@dataclass(frozen=True, kw_only=True)
class Box3D:
    """One object: what it is, how sure the detector is, where it is, how big, how it moves.

    Sequences given for `center`, `size` and `velocity` (lists, numpy arrays) are stored as
    tuples of floats; every value is checked, and an `InputError` names the field that fails.

    Attributes:
        class_name: the object's class (the evaluation checks it against its class list).
        center: (x, y, z) of the box centre, metres.
        size: (l, w, h), length along the heading, width, height; metres, each > 0.
        yaw: heading about z, radians (any real value; compared modulo the period).
        velocity: (vx, vy) in the ground plane, m/s.
        score: detection confidence in [0, 1]; None for ground truth.
        track_id: identity of the object across samples, when known.
    """

    class_name: str
    center: tuple[float, float, float]
    size: tuple[float, float, float]
    yaw: float
    velocity: tuple[float, float] = (0.0, 0.0)
    score: float | None = None
    track_id: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.class_name, str) or not self.class_name:
            raise InputError(f"Box3D class_name must be a non-empty string, got {self.class_name!r}")
        object.__setattr__(self, "center", _floats("center", self.center, 3))
        object.__setattr__(self, "size", _floats("size", self.size, 3))
        object.__setattr__(self, "velocity", _floats("velocity", self.velocity, 2))
        object.__setattr__(self, "yaw", _finite("yaw", self.yaw))
        for axis, value in zip(SIZE_AXES, self.size, strict=True):
            if value <= 0:
                raise InputError(f"Box3D size {axis} is {value} m: sizes must be > 0")
        if self.score is not None:
            score = _finite("score", self.score)
            if not 0.0 <= score <= 1.0:
                raise InputError(f"Box3D score is {score}: a prediction's score is in [0, 1]")
            object.__setattr__(self, "score", score)
        if self.track_id is not None and not isinstance(self.track_id, str):
            raise InputError(f"Box3D track_id must be a string or None, got {self.track_id!r}")

    @property
    def ground_range(self) -> float:
        """Distance of the centre from the rig's origin in the ground plane (x, y), metres."""
        return math.hypot(self.center[0], self.center[1])


# The objects of each sample, by sample token (the order of the mapping is kept).
Samples = Mapping[str, Sequence[Box3D]]


def _finite(field: str, value: object) -> float:
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise InputError(f"Box3D {field} must be a number, got {value!r}") from None
    if not math.isfinite(number):
        raise InputError(f"Box3D {field} is {number}: it must be finite")
    return number


def _floats(field: str, values: object, length: int) -> tuple[float, ...]:
    try:
        items = list(values)  # type: ignore[call-overload]
    except TypeError:
        raise InputError(f"Box3D {field} must be a sequence of {length} numbers, got {values!r}") from None
    if len(items) != length:
        raise InputError(f"Box3D {field} has {len(items)} values, expected {length}: {values!r}")
    return tuple(_finite(f"{field}[{i}]", v) for i, v in enumerate(items))
