"""Cluster tests: a Ray cluster over separate hosts (network + PID namespaces), as in production.

Host 0 is the head (GCS, dashboard on its own IP, inference: `infer_host`) and runs the
drivers; host 1 is a sensor host (`rig_host`); host 2 runs no cluster, only single-node runs to
compare against. The one skip in this package: a machine that cannot create namespaces.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.cluster.hosts import Hosts, HostsUnavailable
from tests.cluster.ray_cluster import RayCluster

REPO = Path(__file__).resolve().parents[2]
SIM_LOCAL = REPO / "configs" / "pipeline" / "sim-local.yaml"
HEAD_RESOURCES = {"infer_host": 1.0}
SENSOR_HOST_RESOURCES = {"rig_host": 1.0}
RIG_ON_SENSOR_HOST = {"rig_host": 0.01}
INFERENCE_ON_HEAD = {"infer_host": 0.01}


@pytest.fixture(scope="module")
def hosts() -> Iterator[Hosts]:
    try:
        with Hosts(3, repo=REPO) as made:
            yield made
    except HostsUnavailable as err:
        pytest.skip(
            f"cluster tests need Linux network and PID namespaces (root, iproute2, util-linux): {err}"
        )


@pytest.fixture(scope="module")
def cluster(hosts: Hosts) -> RayCluster:
    logs = hosts.root / "logs"
    logs.mkdir(exist_ok=True)
    made = RayCluster(
        head=hosts[0], workers=[(hosts[1], SENSOR_HOST_RESOURCES)], head_resources=HEAD_RESOURCES
    )
    made.start(logs)
    return made  # torn down with the hosts


def sim_local(*, placed: bool, **top: Any) -> dict[str, Any]:
    """configs/pipeline/sim-local.yaml, its rig pinned to the sensor host and inference to the
    head when `placed`; `top` replaces top-level keys."""
    config: dict[str, Any] = yaml.safe_load(SIM_LOCAL.read_text())
    config = copy.deepcopy(config)
    if placed:
        config["rigs"][0]["resources"] = RIG_ON_SENSOR_HOST
        config["inference"]["resources"] = INFERENCE_ON_HEAD
    config.update(top)
    return config


def replay_of(recording: Path, *, placed: bool) -> dict[str, Any]:
    """Replay `recording` through sim-local's rig: lossless, unpaced."""
    config = sim_local(placed=placed, mode="replay", speed=None)
    for sensor in config["rigs"][0]["sensors"].values():
        sensor["source"] = {"backend": "recording", "path": str(recording)}
    config["rigs"][0]["sync"].pop("wait_for_slop", None)
    return config


def write_config(hosts: Hosts, name: str, config: dict[str, Any]) -> Path:
    path = hosts.shared / name
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path
