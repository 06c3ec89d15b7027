"""`fusion run` in replay mode over ROS bags gives the predictions of the Arrow recording of the same frames."""

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from fusion.recording.source import RecordingSourceConfig
from pipelines.config import PipelineConfig, load_pipeline_config
from tests.pipelines.conftest import run_pipeline
from tests.sensors.rosbag_fixtures import Kind, record_sim, write_bag

pytestmark = pytest.mark.usefixtures("local_ray")


def _key(p):
    return (p.rig, p.seq, p.timestamp, p.label, tuple(p.probs), tuple(p.position or ()), tuple(p.modalities))


def _with_sources(config: PipelineConfig, source: Callable[[Any], Any]) -> PipelineConfig:
    """`config` with `source(old)` as every sensor's source, on half a CPU per inference actor."""
    rig = config.rigs[0]
    sensors = {
        sid: spec.model_copy(update={"source": source(spec.source)}) for sid, spec in rig.sensors.items()
    }
    config.rigs[0] = rig.model_copy(update={"sensors": sensors})
    return config.model_copy(update={"inference": config.inference.model_copy(update={"num_cpus": 0.5})})


def test_shipped_rosbag_config_replays_bags_as_the_recording_of_their_frames(tmp_path: Path) -> None:
    frames = record_sim(tmp_path / "rec", 2.0)
    shipped = load_pipeline_config("configs/pipeline/rosbag.yaml")
    recording = RecordingSourceConfig(backend="recording", path=str(tmp_path / "rec"))
    want, summary, _ = run_pipeline(_with_sources(shipped, lambda _: recording))
    assert [p.seq for p in want] == list(range(20)), summary
    for kind in (Kind.ROS1, Kind.MCAP):
        bag = write_bag(tmp_path / kind.value, kind, frames)
        config = _with_sources(
            load_pipeline_config("configs/pipeline/rosbag.yaml"),
            lambda old, bag=bag: old.model_copy(update={"path": str(bag)}),
        )
        got, summary, _ = run_pipeline(config)
        assert [_key(p) for p in got] == [_key(p) for p in want], (kind, summary)
