"""Pipeline tests run a real local Ray, started once for the whole module and reused."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import ray
import yaml

from fusion.sample import Prediction
from fusion.sinks.base import CallbackSink
from pipelines.config import PipelineConfig
from pipelines.runner import PipelineRunner

TRAIN_CONFIG = Path(__file__).resolve().parents[2] / "configs/train/sensor-small.yaml"

SIM_RIG: dict[str, Any] = {
    "id": "sim",
    "sensors": {
        "cam0": {
            "modality": "camera",
            "source": {"backend": "simulated", "rate_hz": 30, "width": 96, "height": 72},
        },
        "mic0": {"modality": "microphone", "source": {"backend": "simulated", "rate_hz": 20}},
        "lidar0": {
            "modality": "lidar",
            "source": {"backend": "simulated", "rate_hz": 10, "azimuth_steps": 360},
        },
    },
    # As the shipped sensor-small checkpoint was trained: read from its training config.
    "preprocess": yaml.safe_load(TRAIN_CONFIG.read_text())["data"]["preprocess"],
}


def sim_config(*, realtime: bool, duration_s: float | None = None, **top: Any) -> PipelineConfig:
    """A one-rig simulated pipeline; replay (finite, unpaced) unless `realtime`."""
    rig = copy.deepcopy(SIM_RIG)
    for spec in rig["sensors"].values():
        spec["source"]["realtime"] = realtime
        if duration_s is not None and not realtime:
            spec["source"]["duration_s"] = duration_s
    data = {"mode": "live" if realtime else "replay", "rigs": [rig], **top}
    if realtime:
        data["duration_s"] = duration_s
    data.setdefault("inference", {"actors": 1, "max_batch_size": 4, "max_wait_ms": 10, "num_cpus": 0.5})
    return PipelineConfig.model_validate(data)


def run_pipeline(config: PipelineConfig, on_prediction=None) -> tuple[list[Prediction], dict, PipelineRunner]:
    got: list[Prediction] = []

    def collect(p: Prediction) -> None:
        got.append(p)
        if on_prediction is not None:
            on_prediction(p, runner)

    runner = PipelineRunner(config, CallbackSink(collect), status=False)
    runner.start()
    summary = runner.run()
    return got, summary, runner


@pytest.fixture(scope="module")
def local_ray():
    if ray.is_initialized():
        ray.shutdown()
    ray.init(address="local", num_cpus=4, include_dashboard=False, configure_logging=False)
    yield
    ray.shutdown()
