import pickle

import pytest
import torch

from fusion.model import build_model
from fusion.training.checkpoint import (
    TRAIN_CONFIG_KEY,
    CheckpointError,
    checkpoint_version,
    load_checkpoint,
    preprocess_mismatches,
    save_checkpoint,
    trained_preprocess,
)
from tests.model.conftest import make_inputs, tiny_config


def test_round_trip_is_bit_exact(tmp_path):
    torch.manual_seed(0)
    model = build_model(tiny_config())
    path = save_checkpoint(model, tmp_path / "m.safetensors")
    loaded = load_checkpoint(path)
    assert loaded.config == model.config
    for (k, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items(), strict=True):
        assert torch.equal(a, b), k
    with torch.no_grad():
        assert torch.equal(model.eval()(make_inputs()).logits, loaded.eval()(make_inputs()).logits)
    assert checkpoint_version(path).startswith("m@")


def test_pickles_are_refused(tmp_path):
    model = build_model(tiny_config())
    torch.save(model.state_dict(), tmp_path / "m.pt")
    with pytest.raises(CheckpointError, match="looks like a pickle"):
        load_checkpoint(tmp_path / "m.pt")
    (tmp_path / "p.safetensors").write_bytes(pickle.dumps({"a": 1}))
    with pytest.raises(CheckpointError, match="looks like a pickle"):
        load_checkpoint(tmp_path / "p.safetensors")


def test_tampered_files_are_refused(tmp_path):
    path = save_checkpoint(build_model(tiny_config()), tmp_path / "m.safetensors")
    data = bytearray(path.read_bytes())
    (tmp_path / "cut.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="not a valid safetensors file"):
        load_checkpoint(tmp_path / "cut.safetensors")
    other = save_checkpoint(build_model(tiny_config(latent_dim=64)), tmp_path / "o.safetensors")
    # Config of one model with the weights of another: caught by strict loading.
    from safetensors.torch import load_file, save_file

    from fusion.training.checkpoint import read_checkpoint

    _, _, meta = read_checkpoint(path)
    save_file(load_file(str(other)), str(tmp_path / "mixed.safetensors"), metadata=meta)
    with pytest.raises(CheckpointError, match="weights do not match"):
        load_checkpoint(tmp_path / "mixed.safetensors")
    with pytest.raises(CheckpointError, match="checkpoint not found"):
        load_checkpoint(tmp_path / "nope.safetensors")


def test_training_preprocessing_is_recorded_and_compared_with_defaults_filled_in(tmp_path):
    import json

    model = build_model(tiny_config())
    plain = save_checkpoint(model, tmp_path / "plain.safetensors")
    assert trained_preprocess(plain) is None  # not from `fusion train`: nothing to compare
    trained = {"camera": {"height": 64, "width": 64, "normalize": "imagenet"}, "lidar": {"max_points": 512}}
    extra = {TRAIN_CONFIG_KEY: json.dumps({"name": "t", "data": {"preprocess": trained}})}
    path = save_checkpoint(model, tmp_path / "trained.safetensors", extra=extra)
    assert trained_preprocess(path) == trained
    assert preprocess_mismatches(trained, trained) == []
    # Spelled differently but equal once defaults are filled in: no mismatch.
    same = {"camera": {"normalize": "imagenet", "height": 64, "width": 64}, "lidar": {"max_points": 512}}
    assert preprocess_mismatches(trained, same) == []
    got = preprocess_mismatches(trained, {"camera": {"height": 64, "width": 64}})
    assert any(line.startswith("camera.normalize: 'unit' here, 'imagenet' in training") for line in got)
    assert any(line.startswith("lidar.max_points:") for line in got)


def test_a_header_length_starting_with_the_pickle_marker_still_loads(tmp_path):
    """The 8-byte header length may begin with 0x80, pickle's protocol marker: not a pickle."""
    model = build_model(tiny_config())
    for pad in range(256):
        path = save_checkpoint(model, tmp_path / "odd.safetensors", extra={"pad": "x" * pad})
        if path.read_bytes()[:1] == b"\x80":
            break
    else:
        raise AssertionError("no padding gave a header length starting with 0x80")
    loaded = load_checkpoint(path)
    for (name, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items(), strict=True):
        assert torch.equal(a, b), name
