"""pipelines.cluster.start_ray: which Ray a command starts or joins (ray.init's arguments)."""

from __future__ import annotations

import pytest
import ray

from pipelines import cluster
from pipelines.config import MetricsConfig


@pytest.fixture
def calls(monkeypatch):
    seen: list[dict] = []
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", lambda **kw: seen.append(kw))
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    return seen


def test_without_an_address_a_run_starts_its_own_ray(calls):
    # Ray's default (address None) would join the newest Ray running on the machine.
    assert cluster.start_ray(MetricsConfig(), None) is True
    (kw,) = calls
    assert kw["address"] == "local"
    assert kw["include_dashboard"] is True  # a new local Ray: Prometheus discovery needs it


def test_an_address_or_ray_address_joins_that_cluster(calls, monkeypatch):
    cluster.start_ray(MetricsConfig(), "10.0.0.1:6379")
    monkeypatch.setenv("RAY_ADDRESS", "10.0.0.2:6379")
    cluster.start_ray(MetricsConfig(), None)
    assert [kw["address"] for kw in calls] == ["10.0.0.1:6379", None]  # None: Ray reads RAY_ADDRESS
    assert all(kw["include_dashboard"] is False for kw in calls)
