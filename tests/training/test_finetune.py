"""`fusion train --init`: weights from a checkpoint, the classifier re-initialized for new classes."""

from __future__ import annotations

import pytest
import torch
import yaml

from fusion.errors import CheckpointError
from fusion.model import build_model
from fusion.training.checkpoint import read_checkpoint, save_checkpoint
from fusion.training.train import Trainer, model_config
from fusion_cli.main import main
from tests.training.test_train import TINY_MODEL, data_dir, tiny_train_config  # noqa: F401 - data_dir: a fixture

THREE = ["none", "person", "vehicle"]


@pytest.fixture
def checkpoint(tmp_path):
    torch.manual_seed(123)
    model = build_model(model_config(tiny_train_config(tmp_path)))
    return save_checkpoint(model, tmp_path / "base.safetensors")


def test_new_classes_reset_the_classifier_and_keep_the_rest(data_dir, tmp_path, checkpoint):  # noqa: F811
    # Only the model's classes matter here; the data's labels (up to 6) are checked against them.
    config = tiny_train_config(tmp_path, classes=[*THREE, "a", "b", "c", "d"])
    trainer = Trainer(config, data_dir=data_dir, run_dir=tmp_path / "run", init=checkpoint, progress=False)
    _, saved, _ = read_checkpoint(checkpoint)
    state = trainer.model.state_dict()
    assert trainer.model.config.class_names[:3] == THREE and state["classifier.weight"].shape[0] == 7
    assert trainer.initialized is not None
    assert trainer.initialized.reset == ("classifier.weight", "classifier.bias")
    for key, value in state.items():
        if not key.startswith("classifier."):
            assert torch.equal(value, saved[key]), key  # position head included
    assert trainer.initialized.kept == len(saved) - 2
    assert (
        "classifier re-initialized for the new classes (0, 1, 2, 3, 4, 5, 6 -> none, person, vehicle, a, b, c, d)"
        in (trainer.initialized.describe(checkpoint))
    )


def test_same_classes_keep_every_tensor(data_dir, tmp_path, checkpoint):  # noqa: F811
    trainer = Trainer(
        tiny_train_config(tmp_path),
        data_dir=data_dir,
        run_dir=tmp_path / "run",
        init=checkpoint,
        progress=False,
    )
    _, saved, _ = read_checkpoint(checkpoint)
    assert trainer.initialized is not None and trainer.initialized.reset == ()
    assert all(torch.equal(v, saved[k]) for k, v in trainer.model.state_dict().items())
    # The fine-tuning run trains from there.
    result = trainer.run()
    assert result.steps == trainer.total_steps and result.final_loss == result.final_loss


def test_another_architecture_is_refused_naming_the_tensors(data_dir, tmp_path):  # noqa: F811
    other = tmp_path / "other.yaml"
    other.write_text(yaml.safe_dump({**TINY_MODEL, "latent_dim": 16}))
    wrong = save_checkpoint(
        build_model(model_config(tiny_train_config(tmp_path, model=str(other)))), tmp_path / "w.safetensors"
    )
    with pytest.raises(
        CheckpointError,
        match=r"w\.safetensors: weights do not fit the model being trained \(.*shape differs: ",
    ):
        Trainer(
            tiny_train_config(tmp_path),
            data_dir=data_dir,
            run_dir=tmp_path / "run",
            init=wrong,
            progress=False,
        )


def test_cli_says_what_was_kept(data_dir, tmp_path, checkpoint, capsys):  # noqa: F811
    def args(**changes):
        path = tmp_path / "train.yaml"
        path.write_text(
            yaml.safe_dump(tiny_train_config(tmp_path, epochs=1, **changes).model_dump(mode="json"))
        )
        return [
            "train",
            "--config",
            str(path),
            "--data",
            str(data_dir),
            "--run-dir",
            str(tmp_path / "r"),
            "--quiet",
        ]

    seven = ["nothing", "pedestrian", "cyclist", "car", "truck", "emergency_vehicle", "motorcycle"]
    assert main([*args(classes=seven), "--init", str(checkpoint)]) == 0
    assert f"initialized from {checkpoint}: " in capsys.readouterr().err  # ... classifier re-initialized
    # The generated data has labels up to 6: three classes cannot hold them.
    assert main([*args(classes=THREE), "--init", str(checkpoint)]) == 2
    assert "has label 6, the model 3 classes" in capsys.readouterr().err
    assert main([*args(), "--init", str(tmp_path / "missing.safetensors")]) == 2
    assert "checkpoint not found" in capsys.readouterr().err
    assert main([*args(), "--init", str(checkpoint), "--num-workers", "2"]) == 2
    assert "--init runs in this process only" in capsys.readouterr().err
