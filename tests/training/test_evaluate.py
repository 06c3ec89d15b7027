import dataclasses

import numpy as np
import pytest
import torch
import yaml

from fusion.model import build_model
from fusion.sample import Modality
from fusion.training.data import load_split
from fusion.training.eval_report import write_report
from fusion.training.evaluate import (
    NO_INPUT,
    SUBSETS,
    EvalReport,
    SubsetResult,
    condition_bands,
    confusion_matrix,
    evaluate,
    macro_f1,
    predict,
    score,
)
from fusion.training.train import model_config
from fusion_cli.main import main
from tests.training.test_train import data_dir, tiny_train_config  # noqa: F401  (a fixture and a helper)


def test_confusion_matrix_and_macro_f1():
    labels = np.array([0, 0, 1, 1, 2, 2])
    pred = np.array([0, 1, 1, 1, 2, NO_INPUT])
    cm = confusion_matrix(labels, pred, 3)
    assert cm.tolist() == [[1, 1, 0], [0, 2, 0], [0, 0, 1]]
    # class 0: p 1, r 1/2; class 1: p 2/3, r 1; class 2: p 1, r 1/2 (the NO_INPUT is a miss)
    f1 = [2 / 3, 0.8, 2 / 3]
    assert macro_f1(cm, labels) == pytest.approx(np.mean(f1))


def test_condition_bands_and_position_error():
    scene = {
        "night": np.array([False, True, False]),
        "weather": np.array(["clear", "fog", "rain"], dtype=object),
        "distance_m": np.array([5.0, 25.0, np.nan]),
        "snr_db": np.array([-20.0, 12.0, np.nan]),
    }
    bands = condition_bands(scene)
    assert bands["light"].tolist() == ["day", "night", "day"]
    assert bands["distance"].tolist() == ["< 10 m", ">= 20 m", ""]
    assert bands["snr"].tolist() == ["< -10 dB", ">= 10 dB", ""]
    labels = np.array([1, 2, 0])
    true_pos = np.array([[3.0, 4.0, 0.0], [20.0, 0.0, 0.0], [np.nan] * 3])
    pred_pos = np.array([[0.0, 0.0, 0.0], [20.0, 1.0, 0.0], [9.0, 9.0, 9.0]])
    r = score(labels, np.array([1, 0, 0]), pred_pos, true_pos, bands, subset="camera", num_classes=3)
    assert r.accuracy == pytest.approx(2 / 3)
    assert r.position_median_m == pytest.approx(3.0)  # errors 5 and 1, 'nothing' not counted
    assert r.by_condition["light"] == {"day": (2, 1.0), "night": (1, 0.0)}
    assert r.by_condition["distance"] == {"< 10 m": (1, 1.0), ">= 20 m": (1, 0.0)}


def _report(acc: dict[str, float], *, camera_day: float = 0.9, position: float = 0.5) -> EvalReport:
    names = ["camera", "lidar", "microphone", "camera+lidar", "camera+microphone", "lidar+microphone"]
    results = [
        SubsetResult(subset=n, samples=1, no_input=0, accuracy=acc[n], macro_f1=0.0, position_median_m=position,
                     position_p90_m=0.0, confusion=[[1]],
                     by_condition={"light": {"day": (1, camera_day), "night": (1, 0.5)}})
        for n in [*names, "camera+lidar+microphone"]
    ]  # fmt: skip
    return EvalReport(class_names=["a"], samples=1, results=results, seconds=0.0)


GOOD = {"camera": 0.8, "lidar": 0.9, "microphone": 0.85, "camera+lidar": 0.96,
        "camera+microphone": 0.95, "lidar+microphone": 0.97, "camera+lidar+microphone": 0.99}  # fmt: skip


def test_targets_check_accuracy_camera_pairs_robustness_and_position():
    assert all(ok for _, ok in _report(GOOD).targets())
    assert _report(GOOD).fusion_gain() == ("lidar", pytest.approx(9.0))
    bad = {**GOOD, "camera": 0.7, "camera+microphone": 0.69, "camera+lidar+microphone": 0.98}
    failed = [c for c, ok in _report(bad, camera_day=0.8, position=0.7).targets() if not ok]
    assert failed == [
        "all three reach >= 98.5% (98.0%)",
        "camera alone reaches >= 75% (70.0%)",
        "camera alone by day reaches >= 85% (80.0%)",
        "camera+microphone (69.0%) beats camera (70.0%) and microphone (85.0%)",
        "without lidar: 69.0% is within 5 points of all three (98.0%, drop 29.0)",
        "position error median with all three <= 0.6 m (0.70 m)",
    ]


def test_shifted_world_allows_a_larger_drop():
    shifted = {**GOOD, "camera+lidar": 0.90, "lidar+microphone": 0.88}  # drops 9 and 11 points
    failed = [c for c, ok in _report(GOOD).targets(shifted=_report(shifted)) if not ok]
    assert failed == [
        "shifted world, without camera: 88.0% is within 10 points of all three (99.0%, drop 11.0)"
    ]


def test_a_subset_without_its_sensor_counts_as_wrong(data_dir, tmp_path):  # noqa: F811
    data = load_split(data_dir, "val")
    samples = [dataclasses.replace(s, segments=dict(s.segments)) for s in data.samples]
    del samples[1].segments[Modality.LIDAR]
    torch.manual_seed(0)
    model = build_model(model_config(tiny_train_config(tmp_path)))
    pred, pos = predict(model, samples, modalities=(Modality.LIDAR,), batch_size=3)
    assert pred[1] == NO_INPUT and np.isnan(pos[1]).all()
    assert (pred[[0, 2, 3]] >= 0).all() and np.isfinite(pos[[0, 2, 3]]).all()
    full, _ = predict(model, samples, batch_size=2)
    alone, _ = predict(model, samples[:1])
    assert full[0] == alone[0]  # batching does not change a prediction


def test_report_covers_every_subset_with_plots(data_dir, tmp_path):  # noqa: F811
    torch.manual_seed(0)
    model = build_model(model_config(tiny_train_config(tmp_path)))
    report = evaluate(model, load_split(data_dir, "val"), progress=False)
    assert [r.subset for r in report.results] == ["+".join(m.value for m in s) for s in SUBSETS]
    md = write_report(
        report,
        tmp_path / "docs" / "eval.md",
        tmp_path / "docs" / "img",
        title="T",
        checkpoint="c@1",
        data="d",
    )
    text = md.read_text()
    for r in report.results:
        assert f"| {r.subset} | {100 * r.accuracy:.1f}% |" in text
    for name in ("eval-subsets.png", "eval-conditions.png", "eval-confusion.png"):
        assert f"](img/{name})" in text
        assert (tmp_path / "docs" / "img" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "## Targets" in text and text.count("PASS") + text.count("FAIL") == 10
    assert "## Shifted world" not in text


def test_eval_command_writes_the_report(data_dir, tmp_path, capsys):  # noqa: F811
    from fusion.training.checkpoint import save_checkpoint

    torch.manual_seed(0)
    ckpt = save_checkpoint(build_model(model_config(tiny_train_config(tmp_path))), tmp_path / "m.safetensors")
    md = tmp_path / "out" / "report.md"
    code = main(["eval", "--checkpoint", str(ckpt), "--data", str(data_dir), "--split", "val",
                 "--report", str(md), "--json", str(tmp_path / "r.json"), "--quiet"])  # fmt: skip
    assert code == 0
    out = capsys.readouterr().out
    assert out.count("accuracy") == 7 and f"report: {md}" in out
    assert (tmp_path / "out" / "img" / "report-confusion.png").is_file()
    assert len(yaml.safe_load((tmp_path / "r.json").read_text())["results"]) == 7
    # A second split as the shifted world: its own table, plot, targets and JSON part.
    code = main(["eval", "--checkpoint", str(ckpt), "--data", str(data_dir), "--split", "val",
                 "--shifted", "train", "--report", str(md), "--json", str(tmp_path / "r.json"), "--quiet"])  # fmt: skip
    assert code == 0
    out = capsys.readouterr().out
    assert out.count("accuracy") == 14 and out.count("shifted world, without") == 3
    text = md.read_text()
    assert "## Shifted world" in text and "](img/report-shifted.png)" in text
    assert (tmp_path / "out" / "img" / "report-shifted.png").is_file()
    assert len(yaml.safe_load((tmp_path / "r.json").read_text())["shifted"]["results"]) == 7
    assert main(["eval", "--checkpoint", str(tmp_path / "nope.safetensors"), "--data", str(data_dir)]) == 2
    assert "checkpoint not found" in capsys.readouterr().err
