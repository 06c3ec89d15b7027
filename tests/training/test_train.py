import json
import math

import numpy as np
import pytest
import torch
import yaml

from fusion.config import parse_config
from fusion.errors import ConfigError
from fusion.model import collate
from fusion.training.checkpoint import load_checkpoint, read_checkpoint
from fusion.training.data import generate
from fusion.training.train import TrainConfig, Trainer, lr_at
from fusion.training.train_state import latest_checkpoint, load_state
from fusion_cli.main import main
from tests.training.test_data import SMALL

# A model for the SMALL data's grids: camera 16 x 16, spectrogram 32 x 8, up to 64 points.
TINY_MODEL = {
    "name": "tiny-sensor",
    "inputs": {
        "camera": {"kind": "grid", "channels": 3, "pos_dims": 2, "num_bands": 4, "max_resolution": [16, 16], "example_shape": [16, 16]},
        "microphone": {"kind": "grid", "channels": 1, "pos_dims": 2, "num_bands": 4, "max_resolution": [32, 8], "example_shape": [32, 8]},
        "lidar": {"kind": "points", "channels": 2, "pos_dims": 3, "num_bands": 3, "max_resolution": [16, 16, 8], "example_shape": [64]},
    },
    "num_latents": 8,
    "latent_dim": 32,
    "num_cross_attends": 1,
    "self_attends_per_block": 1,
    "self_heads": 4,
    "num_classes": 7,
    "position_dims": 3,
}  # fmt: skip


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("data")
    splits = {"train": {"seed": 11, "samples": 16}, "val": {"seed": 12, "samples": 4}}
    generate(parse_config_data({**SMALL, "splits": splits}), out, workers=1, progress=False)
    return out


def parse_config_data(raw):
    from fusion.training.data import DataConfig

    return parse_config(DataConfig, raw)


def tiny_train_config(tmp_path, **changes) -> TrainConfig:
    model = tmp_path / "tiny.yaml"
    model.write_text(yaml.safe_dump(TINY_MODEL))
    raw = {
        "name": "tiny",
        "model": str(model),
        "data": {
            **SMALL,
            "splits": {"train": {"seed": 11, "samples": 16}, "val": {"seed": 12, "samples": 4}},
        },
        "batch_size": 8,
        "epochs": 4,
        "lr": 3e-3,
        "warmup_steps": 2,
        "checkpoint_every": 3,
        "log_every": 1,
        "threads": 1,
        **changes,
    }
    return parse_config(TrainConfig, raw)


def test_loss_falls_within_a_few_steps(data_dir, tmp_path):
    config = tiny_train_config(
        tmp_path, epochs=10, lr=5e-3, modality_dropout=0.0, position_weight=0.0, checkpoint_every=100
    )
    losses = []
    Trainer(config, data_dir=data_dir, run_dir=tmp_path / "run", progress=False).run(
        report=lambda m: losses.append(m["loss"])
    )
    assert len(losses) == 20
    assert np.mean(losses[-5:]) < np.mean(losses[:3]) - 0.2, losses


DETECTION_HEAD = {
    "classes": ["pedestrian", "cyclist", "car", "truck", "emergency_vehicle", "motorcycle"],
    "num_queries": 4,
    "layers": 2,
    "heads": 4,
    "center_offset_m": [15.0, 0.0, -0.6],
    "center_scale_m": [10.0, 6.0, 1.0],
}


def test_a_detection_model_trains_on_the_object_lists(data_dir, tmp_path):
    model = tmp_path / "tiny-det.yaml"
    model.write_text(yaml.safe_dump({**TINY_MODEL, "num_cross_attends": 2, "detection": DETECTION_HEAD}))
    config = tiny_train_config(
        tmp_path, model=str(model), epochs=50, lr=1e-2, modality_dropout=0.0, checkpoint_every=1000
    )
    trainer = Trainer(config, data_dir=data_dir, run_dir=tmp_path / "run", progress=False)
    assert trainer.criterion is not None and trainer.model.detector is not None
    assert any(s.objects for s in trainer.train.samples)
    losses = []
    result = trainer.run(report=lambda m: losses.append(m["loss"]))
    assert len(losses) == 100
    # About 28 to about 17 in 100 steps on 16 scenes: set heads learn slowly, but they learn.
    assert np.mean(losses[-5:]) < 0.8 * np.mean(losses[:3]), losses[::10]
    # The checkpoint holds the decoder and loads as a detector.
    assert result.checkpoint is not None
    loaded = load_checkpoint(result.checkpoint)
    assert loaded.config.detection is not None and loaded.detector is not None


def test_a_resumed_run_matches_an_uninterrupted_one_bit_for_bit(data_dir, tmp_path):
    config = tiny_train_config(tmp_path)  # 8 steps, checkpoints at 3 and 6 and 8
    whole = Trainer(config, data_dir=data_dir, run_dir=tmp_path / "whole", progress=False)
    whole.run()
    first = Trainer(config, data_dir=data_dir, run_dir=tmp_path / "cut", progress=False)
    first.run(until=4)  # "interrupted" after step 4: the newest checkpoint is step 3
    assert latest_checkpoint(tmp_path / "cut")[0].name == "step-0000003.safetensors"
    resumed = Trainer(config, data_dir=data_dir, run_dir=tmp_path / "cut", progress=False)
    result = resumed.run(resume=True)
    assert result.steps == 8 and result.samples == 5 * 8
    for (name, a), (_, b) in zip(
        whole.model.state_dict().items(), resumed.model.state_dict().items(), strict=True
    ):
        assert torch.equal(a, b), name
    for pa, pb in zip(whole.model.parameters(), resumed.model.parameters(), strict=True):
        sa, sb = whole.optimizer.state[pa], resumed.optimizer.state[pb]
        assert all(torch.equal(sa[k], sb[k]) for k in ("step", "exp_avg", "exp_avg_sq"))


def test_training_checkpoints_round_trip_bit_for_bit(data_dir, tmp_path):
    config = tiny_train_config(tmp_path, epochs=1, export=str(tmp_path / "export" / "tiny.safetensors"))
    trainer = Trainer(config, data_dir=data_dir, run_dir=tmp_path / "run", progress=False)
    trainer.run()
    model_path, state_path = latest_checkpoint(tmp_path / "run")
    assert model_path.name == "step-0000002.safetensors"
    for path in (model_path, tmp_path / "export" / "tiny.safetensors"):
        loaded = load_checkpoint(path)
        for (name, a), (_, b) in zip(
            trainer.model.state_dict().items(), loaded.state_dict().items(), strict=True
        ):
            assert torch.equal(a, b), name
    _, _, meta = read_checkpoint(model_path)
    assert json.loads(meta["fusion.train_config"])["name"] == "tiny" and meta["fusion.train_step"] == "2"
    fresh = Trainer(config, data_dir=data_dir, run_dir=tmp_path / "other", progress=False)
    assert load_state(fresh.optimizer, state_path) == 2
    for pa, pb in zip(trainer.model.parameters(), fresh.model.parameters(), strict=True):
        sa, sb = trainer.optimizer.state[pa], fresh.optimizer.state[pb]
        assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    assert fresh.optimizer.param_groups[0]["lr"] == trainer.optimizer.param_groups[0]["lr"]


def test_resume_refuses_another_config_and_old_checkpoints_are_pruned(data_dir, tmp_path):
    config = tiny_train_config(tmp_path, checkpoint_every=1, keep_checkpoints=2, epochs=1)
    Trainer(config, data_dir=data_dir, run_dir=tmp_path / "run", progress=False).run()
    assert sorted(p.name for p in (tmp_path / "run").glob("step-*")) == [
        "step-0000001.safetensors",
        "step-0000001.state.safetensors",
        "step-0000002.safetensors",
        "step-0000002.state.safetensors",
    ]
    other = tiny_train_config(tmp_path, checkpoint_every=1, keep_checkpoints=2, epochs=1, lr=1e-4)
    with pytest.raises(ConfigError, match="written by a different training config"):
        Trainer(other, data_dir=data_dir, run_dir=tmp_path / "run", progress=False).run(resume=True)


def test_cosine_schedule_and_config_checks(tmp_path):
    config = tiny_train_config(tmp_path, lr=1e-3, min_lr=1e-5, warmup_steps=10)
    assert lr_at(config, 0, 100) == pytest.approx(1e-4)
    assert lr_at(config, 9, 100) == pytest.approx(1e-3)
    assert lr_at(config, 55, 100) == pytest.approx((1e-3 + 1e-5) / 2)
    assert lr_at(config, 100, 100) == pytest.approx(1e-5)
    with pytest.raises(ConfigError, match=r"min_lr \(0.1\) exceeds lr"):
        tiny_train_config(tmp_path, min_lr=0.1)
    with pytest.raises(ConfigError, match="needs a 'train' split"):
        tiny_train_config(tmp_path, data={**SMALL, "splits": {"test": {"seed": 1, "samples": 2}}})


def test_train_command_exports_a_model_that_eval_reads(data_dir, tmp_path, capsys):
    config = tiny_train_config(tmp_path, epochs=1, export=str(tmp_path / "tiny.safetensors"), val_every=1)
    path = tmp_path / "train.yaml"
    path.write_text(yaml.safe_dump(config.model_dump(mode="json")))
    assert (
        main(
            [
                "train",
                "--config",
                str(path),
                "--data",
                str(data_dir),
                "--run-dir",
                str(tmp_path / "run"),
                "--quiet",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "trained 2 steps: 16 samples" in out and "validation accuracy" in out
    log = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert [e["step"] for e in log] == [1, 2] and all(math.isfinite(e["loss"]) for e in log)
    assert (
        main(
            [
                "eval",
                "--checkpoint",
                str(tmp_path / "tiny.safetensors"),
                "--data",
                str(data_dir),
                "--split",
                "val",
                "--quiet",
            ]
        )
        == 0
    )
    assert "camera+lidar+microphone" in capsys.readouterr().out


def test_two_ray_train_workers_reach_the_weights_of_one_process(data_dir, tmp_path):
    """The detector (set loss and one-label loss) on 2 Ray Train workers, 4 samples each of
    every global batch of 8, ends where one process ends: losses are normalized by counts over
    the global batch, however the objects fall between the workers."""
    import ray

    from pipelines.train import train_with_ray

    model = tmp_path / "tiny-det.yaml"
    model.write_text(yaml.safe_dump({**TINY_MODEL, "num_cross_attends": 2, "detection": DETECTION_HEAD}))
    config = tiny_train_config(
        tmp_path, model=str(model), epochs=2, modality_dropout=0.0, checkpoint_every=100
    )
    # Objects fall unevenly between the two halves of some batch: the case that needs the global counts.
    trainer = Trainer(config, data_dir=data_dir, run_dir=tmp_path / "one", progress=False)
    halves = [
        [len(trainer.train.samples[i].objects or []) for i in trainer.batch_indices(s)] for s in range(2)
    ]
    assert any(sum(h[0::2]) != sum(h[1::2]) for h in halves), halves
    one = trainer.run()
    started = not ray.is_initialized()
    if started:
        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        exported = config.model_copy(update={"export": str(tmp_path / "ray.safetensors")})
        two = train_with_ray(exported, num_workers=2, data_dir=data_dir, run_dir=tmp_path / "two")
    finally:
        if started:
            ray.shutdown()
    assert one.steps == two.steps == 4 and two.samples == 32  # global batches of 8, 4 per worker
    assert latest_checkpoint(tmp_path / "two")[0].name == "step-0000004.safetensors"
    assert load_checkpoint(tmp_path / "ray.safetensors").config.detection is not None  # rank 0 exports
    a = read_checkpoint(one.checkpoint)[1]
    b = read_checkpoint(latest_checkpoint(tmp_path / "two")[0])[1]
    assert a.keys() == b.keys() and any(k.startswith("detector.") for k in a)
    # Within float tolerance: Adam turns rounding noise into steps of up to lr where a gradient
    # is exactly zero in exact arithmetic (a key bias shifts every score of a query alike, which
    # the softmax cancels), so parameters agree to a fraction of lr and outputs far closer.
    for name in a:
        assert torch.allclose(a[name], b[name], atol=config.lr / 4, rtol=0), name
    nets = [load_checkpoint(c).eval() for c in (one.checkpoint, latest_checkpoint(tmp_path / "two")[0])]
    batch = collate([s.segments for s in trainer.train.samples[:8]])
    with torch.no_grad():
        out_one, out_two = (net(batch) for net in nets)
    assert torch.allclose(out_one.logits, out_two.logits, atol=1e-4)
    assert torch.allclose(out_one.detections.logits, out_two.detections.logits, atol=1e-4)
    assert torch.allclose(out_one.detections.boxes, out_two.detections.boxes, atol=1e-4)
