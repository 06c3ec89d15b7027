"""Subsets of samples and range bands of boxes."""

import pytest

from fusion.detection.subsets import in_range_band, restrict, with_condition, with_object_count
from fusion.errors import InputError
from tests.detection.helpers import box

TRUTH = {"a": [box(x=5), box(x=25), box(x=0, y=45)], "b": [box(x=12)], "c": []}


def test_restrict_keeps_the_given_tokens_in_sample_order():
    assert list(restrict(TRUTH, ["c", "a", "zz"])) == ["a", "c"]


def test_samples_by_condition_label():
    assert with_condition({"a": "night", "b": "day", "c": "night"}, "night") == ["a", "c"]


def test_samples_by_object_count():
    assert with_object_count(TRUTH, 1) == ["a", "b"]
    assert with_object_count(TRUTH, 0, 1) == ["b", "c"]
    with pytest.raises(InputError, match=r"\[3, 2\]"):
        with_object_count(TRUTH, 3, 2)


def test_range_band_keeps_boxes_with_near_le_range_lt_far():
    band = in_range_band(TRUTH, 5.0, 25.0)
    assert {t: [b.center[0] for b in bs] for t, bs in band.items()} == {"a": [5.0], "b": [12.0], "c": []}
    assert [b.center[1] for b in in_range_band(TRUTH, 40.0, 50.0)["a"]] == [45.0]
    with pytest.raises(InputError, match="range band"):
        in_range_band(TRUTH, 10.0, 10.0)
