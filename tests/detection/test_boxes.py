"""Box3D: what it stores, and that a bad value fails with the field named."""

import math

import numpy as np
import pytest

from fusion.detection.boxes import Box3D
from fusion.errors import InputError

GOOD = {"class_name": "car", "center": (1.0, 2.0, 0.5), "size": (4.0, 2.0, 1.5), "yaw": 0.3}


def test_sequences_are_stored_as_float_tuples():
    b = Box3D(**{**GOOD, "center": np.array([3, 4, 0]), "velocity": [1, 2]}, score=np.float32(0.5))
    assert b.center == (3.0, 4.0, 0.0) and type(b.center[0]) is float
    assert b.velocity == (1.0, 2.0)
    assert b.score == 0.5 and type(b.score) is float
    assert b.ground_range == 5.0
    assert Box3D(**GOOD).score is None  # ground truth


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"center": (0.0, math.nan, 0.0)}, "center[1]"),
        ({"size": (4.0, -2.0, 1.5)}, "size w"),
        ({"size": (0.0, 2.0, 1.5)}, "size l"),
        ({"size": (4.0, 2.0)}, "size has 2 values"),
        ({"yaw": math.inf}, "yaw"),
        ({"velocity": (0.0, "fast")}, "velocity[1]"),
        ({"score": 1.5}, "score is 1.5"),
        ({"score": math.nan}, "score"),
        ({"class_name": ""}, "class_name"),
        ({"track_id": 7}, "track_id"),
    ],
)
def test_bad_values_name_the_field(change, named):
    with pytest.raises(InputError, match=named.replace("[", r"\[")):
        Box3D(**{**GOOD, **change})
