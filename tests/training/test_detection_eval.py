"""`fusion eval` for a detector: the nuScenes metric per sensor subset and breakdown, the JSON
and nuScenes files, on a tiny generated multi-object split."""

from __future__ import annotations

import json

import pytest
import torch

from fusion.detection.nuscenes_format import read_submission
from fusion.model import ModelConfig, build_model
from fusion.training import detection_eval
from fusion.training.data import generate, load_split
from fusion.training.detection_eval import evaluate_detection, token
from tests.training.test_data import SMALL, small_config

CLASSES = ["pedestrian", "cyclist", "car", "truck", "emergency_vehicle", "motorcycle"]


@pytest.fixture(scope="module")
def split(tmp_path_factory):
    out = tmp_path_factory.mktemp("det-data")
    config = small_config(
        world={**SMALL["world"], "max_objects": 3},
        splits={"test": {"seed": 21, "samples": 12}},
    )
    generate(config, out, workers=1, progress=False)
    return load_split(out, "test")


def _grid(channels: int, shape: list[int]) -> dict:
    return {
        "kind": "grid",
        "channels": channels,
        "pos_dims": 2,
        "num_bands": 2,
        "max_resolution": shape,
        "example_shape": shape,
    }


def tiny_detector() -> torch.nn.Module:
    config = ModelConfig.model_validate(
        {
            "name": "tiny-det",
            "inputs": {
                "camera": _grid(3, [16, 16]),
                "microphone": _grid(1, [32, 8]),
                "lidar": {
                    "kind": "points",
                    "channels": 2,
                    "pos_dims": 3,
                    "num_bands": 2,
                    "max_resolution": [8, 8, 8],
                    "example_shape": [64],
                },
            },
            "num_latents": 8,
            "latent_dim": 16,
            "num_cross_attends": 2,
            "self_attends_per_block": 1,
            "self_heads": 2,
            "num_classes": 7,
            "detection": {"classes": CLASSES, "num_queries": 6, "layers": 1, "heads": 2},
        }
    )
    torch.manual_seed(0)
    return build_model(config)


def test_every_subset_gets_the_nuscenes_metric_and_its_breakdowns(split):
    report = evaluate_detection(tiny_detector(), split)
    seen = {v for labels in detection_eval.sample_conditions(split).values() for v in labels.values()}
    assert seen <= {"day", "night", "clear", "fog", "rain"} and {"day", "night"} & seen
    names = [r.subset for r in report.results]
    assert len(names) == 7 and names[-1] == "camera+lidar+microphone"
    for r in report.results:
        assert 0.0 <= r.mean_ap <= 1.0
        assert set(r.by_count) == {"0", "1", "2", "3+"}
        assert set(r.by_condition) <= {"day", "night", "clear", "fog", "rain"} and "day" in r.by_condition | {
            "day": 0
        }
        assert list(r.metrics.classes) == CLASSES
    assert report.samples == len(split) == 12
    assert sum(len(b) for b in report.ground_truth.values()) == sum(len(s.objects) for s in split.samples)


def test_the_ground_truth_as_detections_scores_a_perfect_map(split, monkeypatch):
    # The wiring, checked end to end: detections equal to the truth (score 1) give mAP 1 for
    # every subset, and a sample's truth lands under its own token.
    truth = {token(s): s.objects for s in split.samples}

    def oracle(model, samples, **kw):
        return [[b.__class__(**{**b.__dict__, "score": 1.0}) for b in truth[token(s)]] for s in samples]

    monkeypatch.setattr(detection_eval, "detect", oracle)
    report = evaluate_detection(tiny_detector(), split)
    present = {b.class_name for boxes in truth.values() for b in boxes}
    for r in report.results:
        for name, cm in r.metrics.classes.items():
            assert cm.mean_ap == pytest.approx(1.0 if name in present else 0.0), (r.subset, name)


def test_json_and_nuscenes_files(split, tmp_path):
    report = evaluate_detection(tiny_detector(), split, subsets=[detection_eval.SUBSETS[-1]])
    body = json.loads(json.dumps(report.as_json()))
    (result,) = body["results"]
    assert result["subset"] == "camera+lidar+microphone" and 0.0 <= result["map"] <= 1.0
    assert set(result["ap"]) == set(CLASSES) and set(result["ap"]["car"]) == {"0.5", "1", "2", "4"}
    paths = report.write_nuscenes(tmp_path / "nusc")
    assert [p.name for p in paths] == ["gt.json", "results-camera+lidar+microphone.json"]
    _, gt = read_submission(paths[0])
    assert gt.keys() == report.ground_truth.keys()
    meta, det = read_submission(paths[1])
    assert meta.use_camera and meta.use_lidar and det.keys() == gt.keys()


def test_a_classifier_without_a_detection_head_is_refused_naming_the_model(split):
    from fusion.errors import InputError
    from fusion.model import load_preset

    with pytest.raises(InputError, match="sensor-small has no detection head"):
        evaluate_detection(load_preset("sensor-small"), split)


def test_fusion_eval_of_a_detector_writes_json_nuscenes_and_the_report(split, tmp_path, capsys):
    from fusion.training.checkpoint import save_checkpoint
    from fusion_cli.main import main

    checkpoint = save_checkpoint(tiny_detector(), tmp_path / "det.safetensors")
    data = tmp_path / "data"
    generate(
        small_config(world={**SMALL["world"], "max_objects": 3}, splits={"test": {"seed": 21, "samples": 6}}),
        data,
        workers=1,
        progress=False,
    )
    args = ["eval", "--checkpoint", str(checkpoint), "--data", str(data), "--quiet"]
    args += [
        "--json",
        str(tmp_path / "m.json"),
        "--nuscenes",
        str(tmp_path / "nusc"),
        "--report",
        str(tmp_path / "r.md"),
    ]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "camera+lidar+microphone" in out and "mAP" in out
    body = json.loads((tmp_path / "m.json").read_text())
    assert [r["subset"] for r in body["results"]][-1] == "camera+lidar+microphone"
    assert len(list((tmp_path / "nusc").glob("results-*.json"))) == 7
    report = (tmp_path / "r.md").read_text()
    assert "| camera+lidar+microphone |" in report and (tmp_path / "img" / "r-pr.png").stat().st_size > 1000
