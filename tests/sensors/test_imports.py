"""A backend's library loads only where that backend is used, checked in fresh processes.

A config-typo exit and the validation of every shipped pipeline config load none of the backend
libraries (their configs live in light `*_config` modules). A simulated microphone process loads
none either; a simulated camera loads OpenCV alone (its renderer rasterizes with it) and a
simulated LiDAR open3d alone (its renderer ray-casts with it).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
# What the backends of other sensors need: OpenCV (cameras, ROS images), open3d (point clouds),
# rosbags (ROS bags), velodyne-decoder and dpkt (Velodyne), libsndfile and soxr (audio files).
BACKEND_LIBRARIES = ("cv2", "open3d", "rosbags", "velodyne_decoder", "dpkt", "soundfile", "soxr")


def _loaded_after(code: str) -> list[str]:
    """The backend libraries a fresh interpreter holds after running `code`."""
    probe = f"{code}\nimport sys, json\nprint(json.dumps(sorted(m for m in {BACKEND_LIBRARIES!r} if m in sys.modules)))\n"
    res = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout.strip().splitlines()[-1])


def test_a_config_typo_exit_loads_no_backend_library(tmp_path: Path) -> None:
    data = yaml.safe_load((ROOT / "configs/pipeline/sim-local.yaml").read_text())
    data["rigs"][0]["sensors"]["lidar0"]["source"]["rate_hx"] = 10  # a typo in a source key
    path = tmp_path / "typo.yaml"
    path.write_text(yaml.safe_dump(data))
    code = (
        "import contextlib, io\n"
        "from fusion_cli.main import main\n"
        "with contextlib.redirect_stderr(io.StringIO()) as err:\n"
        f"    code = main(['run', '--config', {str(path)!r}])\n"
        "assert code == 2 and 'lidar0.source.rate_hx' in err.getvalue(), err.getvalue()\n"
    )
    assert _loaded_after(code) == []


def test_validating_every_shipped_pipeline_config_loads_no_backend_library() -> None:
    """Rosbag, recording, device and simulated sources alike: validation reads light config modules."""
    code = (
        "from pathlib import Path\n"
        "from pipelines.config import load_pipeline_config\n"
        "for path in sorted(Path('configs/pipeline').glob('*.yaml')):\n"
        "    load_pipeline_config(path)\n"
        "from fusion.sensors import backends, source_config_class\n"
        "from fusion.sample import Modality\n"
        "for m in Modality:\n"
        "    for b in backends(m):\n"
        "        source_config_class(m, b)\n"
    )
    assert _loaded_after(code) == []


@pytest.mark.parametrize(
    ("modality", "size", "loads"),
    [("microphone", {}, []), ("camera", {"width": 32, "height": 24}, ["cv2"]), ("lidar", {}, ["open3d"])],
)
def test_a_simulated_sensor_loads_only_what_it_renders_with(
    modality: str, size: dict, loads: list[str]
) -> None:
    config = {"backend": "simulated", "duration_s": 0.3, **size}
    code = (
        "from fusion.sample import Modality\n"
        "from fusion.sensors import make_source, parse_source\n"
        f"m = Modality({modality!r})\n"
        f"with make_source(m, parse_source(m, {config!r})) as source:\n"
        "    frames = list(source)\n"
        "assert len(frames) >= 3, frames\n"
    )
    assert _loaded_after(code) == loads
