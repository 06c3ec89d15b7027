"""`fusion run` on a two-host Ray cluster: each host its own IP, processes and /tmp (hosts.py).

One cluster serves the whole module, with token authentication on (docs/deploy.md), so every
run here is also a run with the token; the tests run in file order, and the last one takes
the sensor host down.
"""

from __future__ import annotations

from pathlib import Path

from tests.cluster.conftest import replay_of, sim_local, write_config
from tests.cluster.hosts import Hosts
from tests.cluster.ray_cluster import RAY, RayCluster, Run, node_env, predictions

LIVE_S = "12"  # long enough for the sensors to stream past start-up on two busy cores
ACTORS = ("SensorActor", "FuserActor", "InferenceActor")


def test_sensors_run_on_the_sensor_host_and_inference_on_the_head(hosts: Hosts, cluster: RayCluster) -> None:
    config = write_config(hosts, "live.yaml", sim_local(placed=True))
    out = hosts.shared / "live.jsonl"
    before = {a["id"] for found in cluster.actors(*ACTORS).values() for a in found}

    run = cluster.fusion(
        "run",
        "--config",
        str(config),
        "--address",
        cluster.address,
        "--duration",
        LIVE_S,
        "--output",
        str(out),
        "--quiet",
    )

    assert run.returncode == 0, run.stderr[-4000:]
    assert run.summary["predictions"] > 0
    assert len(predictions(out)) == run.summary["predictions"]
    placed = {
        cls: {cluster.node_ip(a["node"]) for a in found if a["id"] not in before}
        for cls, found in cluster.actors(*ACTORS).items()
    }
    sensor_host, head = hosts[1].ip, hosts[0].ip
    assert placed == {"SensorActor": {sensor_host}, "FuserActor": {sensor_host}, "InferenceActor": {head}}
    # Sensors share their fuser's host: frames over its local socket; the model is on another host.
    assert set(run.summary["sensor_transport"].values()) == {"socket"}
    assert run.summary["inference_transport"] == {"sim": ["ray"]}


def _record(hosts: Hosts, cluster: RayCluster) -> Path:
    """A 6 s recording of sim-local's rig, made on the sensor host, on the shared disk."""
    source = sim_local(placed=False)
    for sensor in source["rigs"][0]["sensors"].values():
        sensor["source"]["realtime"] = False  # simulated time: as fast as the host can
    config = write_config(hosts, "record.yaml", source)
    recording = hosts.shared / "rec"
    done = hosts[1].run(
        [
            "python",
            "-m",
            "fusion_cli",
            "record",
            "--config",
            str(config),
            "--out",
            str(recording),
            "--duration",
            "6",
        ],
        env=node_env(hosts[1]),
    )
    assert done.returncode == 0, done.stderr[-4000:]
    return recording


def test_replay_across_hosts_predicts_what_one_node_predicts(hosts: Hosts, cluster: RayCluster) -> None:
    recording = _record(hosts, cluster)
    across = hosts.shared / "replay-cluster.jsonl"
    alone = hosts.shared / "replay-single.jsonl"
    placed = write_config(hosts, "replay-cluster.yaml", replay_of(recording, placed=True))
    single = write_config(hosts, "replay-single.yaml", replay_of(recording, placed=False))

    # Host 2 is in no cluster: `fusion run` starts a Ray of its own there, as on a laptop.
    local = hosts[2].popen(
        ["python", "-m", "fusion_cli", "run", "--config", str(single), "--output", str(alone), "--quiet"],
        env={"RAY_USAGE_STATS_ENABLED": "0"},
    )
    run = cluster.fusion(
        "run", "--config", str(placed), "--address", cluster.address, "--output", str(across), "--quiet"
    )
    _, local_err = local.communicate(timeout=300)

    assert run.returncode == 0, run.stderr[-4000:]
    assert local.returncode == 0, local_err[-4000:]
    expected = predictions(alone)
    assert len(expected) > 20
    assert predictions(across) == expected


def test_ray_job_submit_through_the_heads_dashboard(hosts: Hosts, cluster: RayCluster) -> None:
    config = write_config(hosts, "job.yaml", sim_local(placed=True))
    # The job's driver runs on the head, given the cluster's address by Ray (RAY_ADDRESS).
    done = hosts[0].run(
        [
            RAY,
            "job",
            "submit",
            f"--address={cluster.dashboard}",
            "--",
            "python",
            "-m",
            "fusion_cli",
            "run",
            "--config",
            str(config),
            "--duration",
            "6",
            "--quiet",
        ],
        env=node_env(hosts[0]),
        timeout=300,
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert "succeeded" in done.stdout
    job = Run(done.returncode, "", done.stdout, 0.0)  # the job's logs: its stdout and stderr, tailed
    assert job.summary["predictions"] > 0
    assert job.summary["inference_transport"] == {"sim": ["ray"]}


def test_a_driver_without_the_token_is_refused_with_a_clear_message(
    hosts: Hosts, cluster: RayCluster
) -> None:
    config = write_config(hosts, "no-token.yaml", sim_local(placed=True))
    nowhere = hosts.shared / "home-without-token"
    nowhere.mkdir(exist_ok=True)
    # A user on the head who was never given the token: no RAY_AUTH_* and no ~/.ray/auth_token.
    env = {
        "HOME": str(nowhere),
        "RAY_max_direct_call_object_size": node_env(hosts[0])["RAY_max_direct_call_object_size"],
    }

    run = cluster.fusion(
        "run",
        "--config",
        str(config),
        "--address",
        cluster.address,
        "--duration",
        "5",
        "--quiet",
        env=env,
        timeout=60,  # a hang guard: refusing must not wait out Ray's connection retries forever
    )

    assert run.returncode != 0
    assert "Traceback" not in run.stderr, run.stderr[-4000:]
    last = run.stderr.strip().splitlines()[-1]
    assert last.startswith("fusion: error:"), last
    assert cluster.address in last and "token" in last and "RAY_AUTH_MODE=token" in last, last
