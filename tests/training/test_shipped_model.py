"""The shipped checkpoint: small, safe to load, fed as it was trained, and right on fresh scenes."""

from pathlib import Path

import numpy as np
import yaml

from fusion.sample import Modality
from fusion.training.checkpoint import (
    load_checkpoint,
    preprocess_mismatches,
    shipped_checkpoint,
    trained_preprocess,
)
from fusion.training.data import ExampleRenderer
from fusion.training.evaluate import predict
from fusion.training.train import load_train_config

SHIPPED = shipped_checkpoint("sensor-small")
TRAIN_CONFIG = Path("configs/train/sensor-small.yaml")


def test_the_default_checkpoint_ships_small_and_loads():
    assert SHIPPED is not None, "checkpoints/sensor-small.safetensors is missing"
    assert SHIPPED.stat().st_size <= 20 * 2**20
    model = load_checkpoint(SHIPPED)
    assert model.config.name == "sensor-small"
    assert model.config.class_names == [
        "nothing",
        "pedestrian",
        "cyclist",
        "car",
        "truck",
        "emergency_vehicle",
        "motorcycle",
    ]


def test_shipped_pipeline_configs_feed_the_model_as_it_was_trained():
    assert SHIPPED is not None
    trained = trained_preprocess(SHIPPED)
    assert trained is not None
    assert preprocess_mismatches(trained, load_train_config(TRAIN_CONFIG).data.preprocess.as_mapping()) == []
    for path in sorted(Path("configs/pipeline").glob("*.yaml")):
        for rig in yaml.safe_load(path.read_text())["rigs"]:
            assert preprocess_mismatches(trained, rig.get("preprocess", {})) == [], f"{path}: {rig['id']}"


def test_the_shipped_model_classifies_scenes_it_never_saw():
    """Scenes from a seed no split used, rendered now by the simulator: a simulator change that
    the checkpoint was not retrained for shows up here."""
    assert SHIPPED is not None
    config = load_train_config(TRAIN_CONFIG).data
    renderer = ExampleRenderer(config, seed=424242)
    samples = [renderer.render(i)[0] for i in range(60)]
    pred, pos = predict(load_checkpoint(SHIPPED), samples)
    labels = np.array([s.label for s in samples])
    assert len(set(labels)) >= 5  # a mix of classes, not one easy one
    accuracy = float(np.mean(pred == labels))
    assert accuracy >= 0.9, (accuracy, list(zip(labels, pred, strict=True)))
    objects = [i for i, s in enumerate(samples) if s.target_position is not None]
    error = np.linalg.norm(pos[objects] - np.array([samples[i].target_position for i in objects]), axis=1)
    assert np.median(error) < 1.0  # metres (0.45 on the 3,000-sample test split)
    # The camera classifies on its own (81 % on the test split; the model before it: 57 %).
    camera, _ = predict(load_checkpoint(SHIPPED), samples, modalities=(Modality.CAMERA,))
    assert float(np.mean(camera == labels)) >= 0.65, list(zip(labels, camera, strict=True))
