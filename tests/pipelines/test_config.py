"""The pipeline config is validated whole, at load, before Ray or torch is imported.

Every section (top level, model, each rig's sensors, sources, sync and preprocessing, inference,
flow, metrics) is typed: a typo or a wrong type anywhere fails at load with one line naming the
key path, and `fusion run` exits non-zero without starting anything.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from fusion.errors import ConfigError
from fusion.fuser import PreprocessConfig
from fusion.sensors import SourceConfig
from fusion.sync import SyncConfig
from pipelines.config import PipelineConfig, load_pipeline_config, replica_source

ROOT = Path(__file__).resolve().parents[2]
SIM_LOCAL = ROOT / "configs" / "pipeline" / "sim-local.yaml"


def _base() -> dict[str, Any]:
    return yaml.safe_load(SIM_LOCAL.read_text())


def _rig(c: dict[str, Any]) -> dict[str, Any]:
    return c["rigs"][0]


# (what is broken, the change, the key path the one line must name)
BROKEN = [
    ("top-level typo", lambda c: c.update(durration_s=3), "durration_s: Extra inputs"),
    ("top-level type", lambda c: c.update(speed="fast"), "speed: Input should be a valid number"),
    ("mode value", lambda c: c.update(mode="batch"), "mode: Input should be 'live' or 'replay'"),
    ("model typo", lambda c: c["model"].update(presett="x"), "model.presett: Extra inputs"),
    ("model preset", lambda c: c["model"].update(preset="sensor-smal"), "model.preset: unknown model preset"),
    (
        "model checkpoint",
        lambda c: c["model"].update(checkpoint="/no/such.safetensors"),
        "model.checkpoint: no such file",
    ),
    ("rig typo", lambda c: _rig(c).update(replica=2), "rigs[sim].replica: Extra inputs"),
    (
        "sensor typo",
        lambda c: _rig(c)["sensors"]["cam0"].update(modalty="camera"),
        "rigs[sim].sensors.cam0.modalty: Extra inputs",
    ),
    (
        "unknown modality",
        lambda c: _rig(c)["sensors"]["cam0"].update(modality="radar"),
        "rigs[sim].sensors.cam0.modality: Input should be 'camera', 'lidar' or 'microphone'",
    ),
    (
        "unknown backend",
        lambda c: _rig(c)["sensors"]["cam0"]["source"].update(backend="webcam"),
        "rigs[sim].sensors.cam0.source.backend: unknown camera backend 'webcam' (known: ",
    ),
    (
        "source typo",
        lambda c: _rig(c)["sensors"]["lidar0"]["source"].update(rate_hx=10),
        "rigs[sim].sensors.lidar0.source.rate_hx: Extra inputs",
    ),
    (
        "source type",
        lambda c: _rig(c)["sensors"]["cam0"]["source"].update(width="320"),
        "rigs[sim].sensors.cam0.source.width: Input should be a valid integer",
    ),
    (
        "nested source type",
        lambda c: _rig(c)["sensors"]["mic0"]["source"].update(world={"seed": "one"}),
        "rigs[sim].sensors.mic0.source.world.seed: Input should be a valid integer",
    ),
    (
        "sync typo",
        lambda c: _rig(c)["sync"].update(wait_for_slopp=False),
        "rigs[sim].sync.wait_for_slopp: Extra inputs",
    ),
    (
        "sync type",
        lambda c: _rig(c)["sync"].update(audio_window_s="1s"),
        "rigs[sim].sync.audio_window_s: Input should be",
    ),
    (
        "sync slop type",
        lambda c: _rig(c)["sync"]["slop_s"].update(camera="wide"),
        "rigs[sim].sync.slop_s.camera: Input should be a valid number",
    ),
    (
        "sync meaning",
        lambda c: _rig(c)["sync"].update(reference="microphone"),
        "rigs[sim].sync: reference cannot be microphone",
    ),
    (
        "preprocess modality",
        lambda c: _rig(c)["preprocess"].update(radar={}),
        "rigs[sim].preprocess.radar: Extra inputs",
    ),
    (
        "preprocess typo",
        lambda c: _rig(c)["preprocess"]["camera"].update(hieght=64),
        "rigs[sim].preprocess.camera.hieght: Extra inputs",
    ),
    (
        "preprocess type",
        lambda c: _rig(c)["preprocess"]["lidar"].update(max_points=1024.5),
        "rigs[sim].preprocess.lidar.max_points: Input should be a valid integer",
    ),
    ("inference typo", lambda c: c["inference"].update(actor=2), "inference.actor: Extra inputs"),
    (
        "inference type",
        lambda c: c["inference"].update(max_batch_size="8"),
        "inference.max_batch_size: Input should be",
    ),
    ("flow", lambda c: c.update(flow={"local_links": True}), "flow.local_links: Extra inputs"),
    (
        "metrics",
        lambda c: c.update(metrics={"port": 70000}),
        "metrics.port: Input should be less than or equal to 65535",
    ),
]


@pytest.mark.parametrize(("change", "key"), [b[1:] for b in BROKEN], ids=[b[0] for b in BROKEN])
def test_every_section_fails_at_load_with_one_line_naming_the_key(tmp_path, change, key):
    data = _base()
    change(data)
    path = tmp_path / "broken.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError) as caught:
        load_pipeline_config(path)
    message = str(caught.value)
    assert message.count("\n") == 0, message  # one problem, one line
    assert message.startswith(f"{path}: {key}"), message


def test_loaded_config_is_typed_all_the_way_down():
    config = load_pipeline_config(SIM_LOCAL)
    rig = config.rigs[0]
    assert isinstance(rig.sync, SyncConfig)
    assert [m.value for m in rig.sync.modalities] == ["camera", "microphone", "lidar"]  # from sensors
    assert rig.sync.wait_for_slop is False
    assert isinstance(rig.preprocess, PreprocessConfig)
    assert rig.preprocess.camera is not None and rig.preprocess.camera.height == 60
    assert rig.preprocess.camera.patch == 2
    source = rig.sensors["lidar0"].source
    assert isinstance(source, SourceConfig) and type(source).__name__ == "SimLidarConfig"
    with pytest.raises(ValueError, match="frozen"):
        rig.sync.max_delay_s = 1.0  # type: ignore[misc]


def test_a_rig_without_sync_gets_the_default_for_its_sensors():
    data = _base()
    del _rig(data)["sync"]
    rig = PipelineConfig.model_validate(data).rigs[0]
    assert rig.sync.reference is not None and rig.sync.reference.value == "lidar"
    del _rig(data)["sensors"]["lidar0"]
    del _rig(data)["preprocess"]["lidar"]
    rig = PipelineConfig.model_validate(data).rigs[0]
    assert rig.sync.reference is None and rig.sync.rate_hz == 10.0


def test_config_round_trips_through_its_dump():
    config = load_pipeline_config(SIM_LOCAL)
    again = PipelineConfig.model_validate(config.model_dump(mode="json"))
    assert again == config


def test_replica_sources_are_named_and_watch_their_own_world():
    source = load_pipeline_config(SIM_LOCAL).rigs[0].sensors["cam0"].source
    first, third = replica_source(source, "cam0", 0), replica_source(source, "cam0", 2)
    assert first.sensor_id == third.sensor_id == "cam0"
    assert third.world.seed == source.world.seed + 2  # type: ignore[attr-defined]
    assert first.world.seed == source.world.seed  # type: ignore[attr-defined]
    named = source.model_copy(update={"sensor_id": "front"})
    assert replica_source(named, "cam0", 1).sensor_id == "front"


def test_relative_paths_are_resolved_on_the_driver(tmp_path, monkeypatch):
    # Actors may run on another host, whose working directory is not the driver's.
    (tmp_path / "rig").mkdir()
    (tmp_path / "model.yaml").write_text((ROOT / "configs" / "model" / "sensor-small.yaml").read_text())
    data = _base()
    _rig(data)["sensors"]["lidar0"] = {
        "modality": "lidar",
        "source": {"backend": "pcap", "path": "rig/sweeps.pcap", "calibration": "rig/calib.yaml"},
    }
    _rig(data)["sensors"]["cam0"] = {
        "modality": "camera",
        "source": {"backend": "file", "path": "/data/a.mp4"},
    }
    data["model"] = {"preset": None, "config": "model.yaml"}
    monkeypatch.chdir(tmp_path)
    config = PipelineConfig.model_validate(data)
    lidar = config.rigs[0].sensors["lidar0"].source
    assert lidar.path == str(tmp_path / "rig" / "sweeps.pcap")  # type: ignore[attr-defined]
    assert lidar.calibration == str(tmp_path / "rig" / "calib.yaml")  # type: ignore[attr-defined]
    assert config.rigs[0].sensors["cam0"].source.path == "/data/a.mp4"  # type: ignore[attr-defined]
    assert config.model.config == str(tmp_path / "model.yaml")
    assert PipelineConfig.model_validate(config.model_dump(mode="json")) == config


def test_every_shipped_pipeline_config_loads():
    paths = sorted((ROOT / "configs" / "pipeline").glob("*.yaml"))
    assert len(paths) >= 3
    for path in paths:
        assert load_pipeline_config(path).rigs


def test_fusion_run_exits_on_a_config_error_before_importing_ray_or_torch(tmp_path):
    data = _base()
    _rig(data)["sync"]["wait_for_slopp"] = False
    path = tmp_path / "typo.yaml"
    path.write_text(yaml.safe_dump(data))
    probe = (
        "import sys\n"
        "from fusion_cli.main import main\n"
        f"code = main(['run', '--config', {str(path)!r}, '--duration', '1'])\n"
        "print('loaded:', sorted(m for m in ('ray', 'torch') if m in sys.modules))\n"
        "sys.exit(code)\n"
    )
    res = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert res.returncode != 0
    assert res.stdout.strip() == "loaded: []", res.stdout
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1, res.stderr
    assert "rigs[sim].sync.wait_for_slopp: Extra inputs are not permitted" in lines[0]
