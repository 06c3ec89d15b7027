"""The simulated world's ground truth as labels rows (`fusion record` writes it as labels.csv).

Time is cut on the grid of the fastest simulated sensor: piece k is centred on that sensor's
frame k (`origin + k / rate_hz`, the very float the sensor stamps its frame with) and spans half
a frame period either side, split where an episode ends. Each piece holds one row per object of
the scene (class, box centre, size, yaw, velocity, track id; rig frame, as `object_list`) at its
frame's time, or at the piece's middle when the frame lies in the other episode, in track order;
or one `nothing` row in an empty episode. A slower sensor on the same grid (a 10 Hz LiDAR under a
30 Hz camera) therefore finds, at each of its frames, exactly the objects that
`fusion data generate` gives a sample taken at that instant, and object 0 first: the label and
position of that sample. A piece whose rows equal the previous piece's but for the time (an
episode with nothing in it, objects standing still) is merged into it.

`object_list(world, t)` is the ground truth of the multi-object world at one instant: every
object as a `fusion.detection.Box3D` (class, centre, size, yaw, velocity, track id), the type
the detection metric scores.
"""

from __future__ import annotations

import dataclasses
import itertools
import math

from fusion.detection.boxes import Box3D
from fusion.errors import InputError
from fusion.sim.objects import CLASS_NAMES
from fusion.sim.world import ObjectState, World
from fusion.training.labels import NOTHING, LabelSegment


def object_box(state: ObjectState) -> Box3D:
    """One object's state as a ground-truth box (no score; the track id as a string)."""
    if state.model is None:
        raise InputError("a 'nothing' state has no object to describe")
    center = state.center()
    assert center is not None
    return Box3D(
        class_name=CLASS_NAMES[state.cls],
        center=center,
        size=state.model.size,
        yaw=state.heading,
        velocity=state.velocity[:2],
        track_id=str(state.track_id),
    )


def object_list(world: World, t: float) -> list[Box3D]:
    """Every object of `world` at scene time t as ground-truth boxes, in track order; [] in an
    empty episode. The track id is the same for one object throughout its episode and never
    another's; yaw is in [-pi, pi]."""
    return [object_box(state) for state in world.scene(t).objects]


def ground_truth(
    world: World, *, start: float, end: float, rate_hz: float, origin: float = 0.0
) -> list[LabelSegment]:
    """Rows from `start` to past `end` (seconds of scene time) on the grid `origin + k / rate_hz`."""
    if not end >= start:
        raise InputError(f"end ({end}) is before start ({start})")
    if not rate_hz > 0:
        raise InputError(f"rate_hz must be positive, got {rate_hz}")
    first = math.floor((start - origin) * rate_hz + 0.5)
    last = math.floor((end - origin) * rate_hz + 0.5)
    episode_s = world.config.episode_s
    out: list[list[LabelSegment]] = []
    for k in range(first, last + 1):
        centre = origin + k / rate_hz
        # Edges from the same expression on both sides, so neighbours meet without a gap or overlap.
        a, b = origin + (k - 0.5) / rate_hz, origin + (k + 0.5) / rate_hz
        a = max(a, start)  # nothing before the first frame (the world has no negative time)
        boundary = math.ceil(a / episode_s) * episode_s
        cuts = [a, boundary, b] if a < boundary < b else [a, b]
        for lo, hi in itertools.pairwise(cuts):
            anchor = centre if lo <= centre < hi else (lo + hi) / 2
            _append(out, _rows(object_list(world, anchor), lo, hi))
    return [row for piece in out for row in piece]


def _rows(boxes: list[Box3D], start: float, end: float) -> list[LabelSegment]:
    if not boxes:
        return [LabelSegment(start=start, end=end, label=NOTHING)]
    return [
        LabelSegment(
            start=start,
            end=end,
            label=b.class_name,
            position=b.center,
            size=b.size,
            yaw=b.yaw,
            velocity=b.velocity,
            track_id=b.track_id,
        )
        for b in boxes
    ]


def _append(out: list[list[LabelSegment]], piece: list[LabelSegment]) -> None:
    last = out[-1] if out else None
    if last is not None and [dataclasses.replace(r, start=0, end=0) for r in last] == [
        dataclasses.replace(r, start=0, end=0) for r in piece
    ]:
        out[-1] = [dataclasses.replace(r, end=piece[0].end) for r in last]
    else:
        out.append(piece)
