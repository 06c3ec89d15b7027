"""Several LiDAR sweeps as one points segment, each point tagged with its sweep's age.

A detector sees motion only across time. The smallest honest way in, and the one detectors in
the field take (CenterPoint and nuScenes' models stack the last ~10 sweeps): the last K sweeps
become one segment whose positions gain a time axis, `t = 1 - 2 * age / window_s` (the newest
sweep at +1, a sweep `window_s` old at -1), which the model's input (`InputConfig.time_axis`,
`pos_dims` = space axes + 1) encodes with Fourier bands like any other axis. The encoder, the
byte array, masks and the cached projections are unchanged: time is one more position axis.

Which sweeps to stack, and moving older sweeps into the current rig frame when the rig moves,
is the fuser's side (it holds the sweeps); this module only builds the segment.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from fusion.errors import InputError
from fusion.sample import Segment


def time_position(age_s: float, window_s: float) -> float:
    """A sweep's age (seconds before the newest) as a position in [-1, 1]: 0 s -> +1, window -> -1."""
    if not window_s > 0:
        raise InputError(f"window_s must be positive, got {window_s}")
    if not 0.0 <= age_s <= window_s:
        raise InputError(f"sweep age {age_s} s is outside the stacking window [0, {window_s}] s")
    return 1.0 - 2.0 * age_s / window_s


def stack_sweeps(sweeps: Sequence[Segment], ages_s: Sequence[float], *, window_s: float) -> Segment:
    """Points segments of K sweeps -> one segment: values [sum M_k, c], positions [sum M_k, d + 1].

    `ages_s[k]` is sweep k's age in seconds (0 for the newest); the rows keep the given order.
    """
    if not sweeps:
        raise InputError("stack_sweeps needs at least one sweep")
    if len(ages_s) != len(sweeps):
        raise InputError(f"{len(sweeps)} sweeps but {len(ages_s)} ages")
    first = sweeps[0]
    values, positions = [], []
    for k, (seg, age) in enumerate(zip(sweeps, ages_s, strict=True)):
        if seg.positions is None:
            raise InputError(f"sweep {k} is a grid segment: only points segments stack")
        if seg.values.shape[1] != first.values.shape[1] or seg.positions.shape[1] != _dims(first):
            raise InputError(
                f"sweep {k} has values [., {seg.values.shape[1]}] and positions [., {seg.positions.shape[1]}], "
                f"sweep 0 [., {first.values.shape[1]}] and [., {_dims(first)}]"
            )
        t = np.full((seg.num_rows, 1), time_position(age, window_s), dtype=np.float32)
        values.append(seg.values.astype(np.float32, copy=False))
        positions.append(np.concatenate([seg.positions.astype(np.float32, copy=False), t], axis=1))
    return Segment(values=np.concatenate(values), positions=np.concatenate(positions))


def _dims(seg: Segment) -> int:
    assert seg.positions is not None
    return int(seg.positions.shape[1])
