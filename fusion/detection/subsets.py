"""Pick the samples or boxes of a subset; evaluating each subset is the caller's business.

A subset of samples is a list of tokens, applied to ground truth and predictions alike with
`restrict`. A range band keeps the boxes whose centre lies in it, on each side separately, as
the devkit's class-range filter does: a true box just inside the band whose prediction lies just
outside counts as missed in this band, and the prediction as false in the next.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from fusion.detection.boxes import Box3D, Samples
from fusion.errors import InputError


def restrict(samples: Samples, tokens: Iterable[str]) -> dict[str, list[Box3D]]:
    """The samples whose token is in `tokens`, in the order of `samples`; unknown tokens are
    skipped (a prediction mapping may leave samples out)."""
    wanted = set(tokens)
    return {token: list(boxes) for token, boxes in samples.items() if token in wanted}


def with_condition(conditions: Mapping[str, str], label: str) -> list[str]:
    """Tokens whose condition label (e.g. "night", "rain") is `label`, from token -> label."""
    return [token for token, condition in conditions.items() if condition == label]


def with_object_count(ground_truth: Samples, low: int, high: int | None = None) -> list[str]:
    """Tokens of the samples holding between `low` and `high` true objects, both included
    (`high=None`: no upper bound)."""
    if low < 0 or (high is not None and high < low):
        raise InputError(f"object count band [{low}, {high}] is empty or negative")
    return [
        token
        for token, boxes in ground_truth.items()
        if len(boxes) >= low and (high is None or len(boxes) <= high)
    ]


def in_range_band(samples: Samples, near_m: float, far_m: float) -> dict[str, list[Box3D]]:
    """Every sample, keeping the boxes with near_m <= ground-plane range < far_m (metres from
    the rig's origin; see `Box3D.ground_range`). Samples left empty stay, with no box."""
    if not 0.0 <= near_m < far_m:
        raise InputError(f"range band [{near_m}, {far_m}) m must have 0 <= near < far")
    return {
        token: [box for box in boxes if near_m <= box.ground_range < far_m]
        for token, boxes in samples.items()
    }
