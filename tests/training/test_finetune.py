"""`fusion train --init`: weights from a checkpoint, class heads matched by name (`--new-head` for other classes)."""

from __future__ import annotations

import pytest
import torch
import yaml

from fusion.errors import CheckpointError, InputError
from fusion.model import build_model
from fusion.model.multimodal import collate
from fusion.training.checkpoint import read_checkpoint, save_checkpoint
from fusion.training.finetune import init_from_checkpoint
from fusion.training.train import Trainer, model_config
from fusion_cli.main import main
from tests.training.test_train import TINY_MODEL, data_dir, tiny_train_config  # noqa: F401 - data_dir: a fixture

THREE = ["none", "person", "vehicle"]


@pytest.fixture
def checkpoint(tmp_path):
    torch.manual_seed(123)
    model = build_model(model_config(tiny_train_config(tmp_path)))
    return save_checkpoint(model, tmp_path / "base.safetensors")


SEVEN = ["nothing", "pedestrian", "cyclist", "car", "truck", "emergency_vehicle", "motorcycle"]


@pytest.fixture
def named_checkpoint(tmp_path):
    torch.manual_seed(321)
    model = build_model(model_config(tiny_train_config(tmp_path, classes=SEVEN)))
    return save_checkpoint(model, tmp_path / "named.safetensors")


def test_new_head_resets_the_classifier_and_keeps_the_rest(data_dir, tmp_path, checkpoint):  # noqa: F811
    # Only the model's classes matter here; the data's labels (up to 6) are checked against them.
    config = tiny_train_config(tmp_path, classes=[*THREE, "a", "b", "c", "d"])
    trainer = Trainer(
        config, data_dir=data_dir, run_dir=tmp_path / "run", init=checkpoint, new_head=True, progress=False
    )
    _, saved, _ = read_checkpoint(checkpoint)
    state = trainer.model.state_dict()
    assert trainer.model.config.class_names[:3] == THREE and state["classifier.weight"].shape[0] == 7
    assert trainer.initialized is not None
    assert trainer.initialized.reset == ("classifier.weight", "classifier.bias")
    for key, value in state.items():
        if not key.startswith("classifier."):
            assert torch.equal(value, saved[key]), key  # position head included
    assert trainer.initialized.kept == len(saved) - 2
    assert "new class head(s) for 0, 1, 2, 3, 4, 5, 6 -> none, person, vehicle, a, b, c, d" in (
        trainer.initialized.describe(checkpoint)
    )


def test_reordered_classes_keep_each_class_its_own_weights(data_dir, tmp_path, named_checkpoint):  # noqa: F811
    order = [3, 0, 6, 1, 5, 2, 4]
    shuffled = [SEVEN[i] for i in order]
    trainer = Trainer(
        tiny_train_config(tmp_path, classes=shuffled),
        data_dir=data_dir,
        run_dir=tmp_path / "run",
        init=named_checkpoint,
        progress=False,
    )
    assert trainer.initialized is not None and trainer.initialized.reset == ()
    assert sorted(trainer.initialized.remapped) == ["classifier.bias", "classifier.weight"]
    assert "class rows reordered by name" in trainer.initialized.describe(named_checkpoint)
    config, saved, _ = read_checkpoint(named_checkpoint)
    original = build_model(config)
    original.load_state_dict(saved)
    original.eval(), trainer.model.eval()
    batch = collate([s.segments for s in trainer.train.samples[:4]])
    with torch.no_grad():
        before, after = original(batch), trainer.model(batch)
    # class k's logit is where k now is (to float rounding: the matmul sees the rows in another order)
    torch.testing.assert_close(after.logits, before.logits[:, order], rtol=0, atol=1e-6)
    assert torch.equal(after.position, before.position)


@pytest.mark.parametrize(
    ("classes", "message"),
    [
        ([*SEVEN[:6], "moped"], "not in the new config: motorcycle; new: moped"),  # renamed
        (
            SEVEN[:6],
            "not in the new config: motorcycle; fix the config.s `classes`, or pass --new-head",
        ),  # missing
        ([*SEVEN, "bus"], r"\): new: bus; fix the config's `classes`"),  # extra
    ],
)
def test_other_class_names_are_refused_unless_a_new_head_is_asked_for(
    data_dir,  # noqa: F811
    tmp_path,
    named_checkpoint,
    classes,
    message,
):
    # the model alone: the data's labels would not fit a 6-class list
    config = model_config(tiny_train_config(tmp_path, classes=classes))
    with pytest.raises(
        InputError, match=rf"named\.safetensors: classifier: the checkpoint's classes .*{message}"
    ):
        init_from_checkpoint(build_model(config), named_checkpoint)
    _, saved, _ = read_checkpoint(named_checkpoint)
    model = build_model(config)
    report = init_from_checkpoint(model, named_checkpoint, new_head=True)
    assert sorted(report.reset) == ["classifier.bias", "classifier.weight"]
    assert all(
        torch.equal(v, saved[k]) for k, v in model.state_dict().items() if not k.startswith("classifier.")
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

    # The checkpoint's classes are unnamed (0..6): named ones are other classes.
    assert main([*args(classes=SEVEN), "--init", str(checkpoint)]) == 2
    assert "pass --new-head to train a new class head" in capsys.readouterr().err
    assert main([*args(classes=SEVEN), "--init", str(checkpoint), "--new-head"]) == 0
    assert f"initialized from {checkpoint}: " in capsys.readouterr().err  # ... new class head(s)
    assert main([*args(), "--new-head"]) == 2
    assert "--new-head is for fine-tuning" in capsys.readouterr().err
    # The generated data has labels up to 6: three classes cannot hold them.
    assert main([*args(classes=THREE), "--init", str(checkpoint), "--new-head"]) == 2
    assert "has label 6, the model 3 classes" in capsys.readouterr().err
    assert main([*args(), "--init", str(tmp_path / "missing.safetensors")]) == 2
    assert "checkpoint not found" in capsys.readouterr().err
    assert main([*args(), "--init", str(checkpoint), "--num-workers", "2"]) == 2
    assert "--init runs in this process only" in capsys.readouterr().err
