"""The nuScenes submission format: field order and units, a round trip, and bad files named."""

import json
import math

import pytest

from fusion.detection.boxes import Box3D
from fusion.detection.nuscenes_format import (
    SubmissionMeta,
    from_submission,
    quaternion_to_yaw,
    read_submission,
    to_submission,
    write_submission,
    yaw_to_quaternion,
)
from fusion.errors import InputError, MissingFileError, OutputExistsError

PREDICTED = Box3D(
    class_name="car",
    center=(10.0, -2.0, 0.8),
    size=(4.5, 1.9, 1.6),
    yaw=math.pi / 2,
    velocity=(3.0, 0.5),
    score=0.75,
    track_id="t7",
)
TRUE = Box3D(class_name="pedestrian", center=(4.0, 1.0, 0.9), size=(0.7, 0.6, 1.8), yaw=-2.5)
SAMPLES = {"s1": [PREDICTED, TRUE], "s2": []}


def test_records_follow_the_nuscenes_fields_and_orders():
    document = to_submission(SAMPLES, SubmissionMeta(use_camera=False))
    assert document["meta"] == {
        "use_camera": False,
        "use_lidar": True,
        "use_radar": False,
        "use_map": False,
        "use_external": False,
    }
    record, truth = document["results"]["s1"]
    assert record["sample_token"] == "s1"
    assert record["size"] == [1.9, 4.5, 1.6]  # w, l, h
    assert record["rotation"] == pytest.approx([math.sqrt(0.5), 0.0, 0.0, math.sqrt(0.5)])
    assert record["translation"] == [10.0, -2.0, 0.8] and record["velocity"] == [3.0, 0.5]
    assert record["detection_name"] == "car" and record["attribute_name"] == ""
    assert record["detection_score"] == 0.75
    assert record["tracking_id"] == "t7"
    assert truth["detection_score"] == -1.0 and "tracking_id" not in truth
    assert document["results"]["s2"] == []


def test_a_file_reads_back_as_written(tmp_path):
    path = tmp_path / "results.json"
    write_submission(path, SAMPLES)
    meta, samples = read_submission(path)
    assert meta == SubmissionMeta()
    assert list(samples) == ["s1", "s2"] and samples["s2"] == []
    for read, written in zip(samples["s1"], SAMPLES["s1"], strict=True):
        assert read.yaw == pytest.approx(written.yaw, abs=1e-12)
        assert read == Box3D(**{**vars(written), "yaw": read.yaw})
    assert samples["s1"][1].score is None


def test_an_existing_file_is_not_overwritten(tmp_path):
    path = tmp_path / "results.json"
    path.write_text("{}")
    with pytest.raises(OutputExistsError, match=r"results\.json"):
        write_submission(path, SAMPLES)


@pytest.mark.parametrize("yaw", [0.0, 0.4, -1.2, math.pi - 1e-9, -math.pi + 1e-9, 3.0])
def test_yaw_survives_the_quaternion(yaw):
    assert quaternion_to_yaw(yaw_to_quaternion(yaw)) == pytest.approx(yaw, abs=1e-12)


def test_yaw_of_a_scaled_or_rolled_quaternion_is_the_heading_on_the_ground():
    w, x, y, z = yaw_to_quaternion(0.7)
    assert quaternion_to_yaw([2 * w, 2 * x, 2 * y, 2 * z]) == pytest.approx(0.7)
    # yaw after a roll of 0.1 rad about the box's own x axis: the Hamilton product
    # (w, 0, 0, z) * (c, s, 0, 0); the x axis, and so the heading, is unmoved
    c, s = math.cos(0.05), math.sin(0.05)
    assert quaternion_to_yaw([w * c, w * s, z * s, z * c]) == pytest.approx(0.7)


def _document(**change):
    record = to_submission({"s": [PREDICTED]})["results"]["s"][0]
    return {"meta": {}, "results": {"s": [{**record, **change}]}}


@pytest.mark.parametrize(
    ("document", "named"),
    [
        ({"meta": {}}, "no 'results'"),
        ({"meta": {"use_lidar": "yes"}, "results": {}}, r"meta \['use_lidar'\]"),
        ({"results": {"s": {}}}, r"results\['s'\] must be a list"),
        ({"results": {"s": [{"size": [1, 1, 1]}]}}, "missing"),
        (_document(size=[1.9, 4.5]), r"results\['s'\]\[0\]: size must be 3"),
        (_document(size=[1.9, -4.5, 1.0]), r"\[0\]: Box3D size l"),
        (_document(rotation=[0, 0, 0, 0]), "rotation"),
        (_document(translation=[1, "x", 0]), "translation"),
        (_document(detection_score=2.0), "score is 2.0"),
        (_document(detection_score=True), "detection_score"),
        (_document(velocity=[math.nan, 0]), r"velocity\[0\] is nan"),
    ],
)
def test_bad_documents_are_named(document, named):
    with pytest.raises(InputError, match=named):
        from_submission(document, source="f.json")


def test_missing_and_unreadable_files_are_named(tmp_path):
    with pytest.raises(MissingFileError, match=r"nope\.json"):
        read_submission(tmp_path / "nope.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(InputError, match=r"bad\.json: not JSON"):
        read_submission(bad)


def test_a_devkit_submission_without_score_reads_as_ground_truth():
    document = _document()
    del document["results"]["s"][0]["detection_score"]
    _, samples = from_submission(json.loads(json.dumps(document)))
    assert samples["s"][0].score is None
