from pathlib import Path

import pytest
import yaml

from fusion.config import load_config
from fusion.errors import ConfigError
from fusion.model import ModelConfig, preset_config, preset_names

PRESETS = Path(__file__).resolve().parent.parent / "configs" / "model"


def _write(tmp_path: Path, data) -> Path:
    path = tmp_path / "model.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def _small() -> dict:
    return yaml.safe_load((PRESETS / "sensor-small.yaml").read_text())


@pytest.mark.parametrize("name", ["paper-imagenet", "sensor-small", "sensor-base"])
def test_shipped_presets_load(name):
    assert name in preset_names()
    cfg = load_config(ModelConfig, PRESETS / f"{name}.yaml")
    assert cfg == preset_config(name) and cfg.name == name


def test_unknown_key_is_named_with_its_path(tmp_path):
    data = _small()
    data["inputs"]["camera"]["num_band"] = 3
    with pytest.raises(
        ConfigError, match=r"model\.yaml: inputs\.camera\.num_band: Extra inputs are not permitted"
    ):
        load_config(ModelConfig, _write(tmp_path, data))


def test_wrong_type_is_named_with_its_path(tmp_path):
    data = {**_small(), "num_latents": "64"}
    with pytest.raises(ConfigError, match=r"num_latents: Input should be a valid integer \(got '64'\)"):
        load_config(ModelConfig, _write(tmp_path, data))


def test_unknown_modality_key_is_named(tmp_path):
    data = _small()
    data["inputs"]["radar"] = data["inputs"].pop("lidar")
    with pytest.raises(
        ConfigError, match=r"inputs\.radar: Input should be 'camera', 'lidar' or 'microphone'"
    ):
        load_config(ModelConfig, _write(tmp_path, data))


def test_inconsistent_values_are_explained(tmp_path):
    data = {**_small(), "latent_dim": 130}
    with pytest.raises(ConfigError, match=r"latent_dim \(130\) must be divisible by self_heads \(4\)"):
        load_config(ModelConfig, _write(tmp_path, data))
    data = {**_small(), "min_padding": 0}
    with pytest.raises(ConfigError, match="min_padding must be >= 1 with several modalities"):
        load_config(ModelConfig, _write(tmp_path, data))


def test_missing_and_unparsable_files_name_the_path(tmp_path):
    with pytest.raises(ConfigError, match=r"config file not found: .*nope\.yaml"):
        load_config(ModelConfig, tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("inputs: [unclosed")
    with pytest.raises(ConfigError, match=r"bad\.yaml: not valid YAML"):
        load_config(ModelConfig, bad)
    bad.write_text("- a list\n")
    with pytest.raises(ConfigError, match="expected a mapping"):
        load_config(ModelConfig, bad)


def test_unknown_preset_lists_the_known_ones():
    with pytest.raises(ValueError, match=r"unknown model preset 'huge'.*paper-imagenet"):
        preset_config("huge")
