"""`fusion run` on a two-host Ray cluster: each host its own IP, processes and /tmp (hosts.py).

One cluster serves the whole module, with token authentication on (docs/deploy.md), so every
run here is also a run with the token; the tests run in file order, and the last one takes
the sensor host down.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path
from typing import Any

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


def _start_live(
    hosts: Hosts, cluster: RayCluster, name: str, duration: str
) -> tuple[subprocess.Popen[str], Path]:
    """A live run in the background on the head; its predictions go to a file as they come."""
    config = write_config(hosts, f"{name}.yaml", sim_local(placed=True))
    out = hosts.shared / f"{name}.jsonl"
    proc = hosts[0].popen(
        [
            "python",
            "-m",
            "fusion_cli",
            "run",
            "--config",
            str(config),
            "--address",
            cluster.address,
            "--duration",
            duration,
            "--output",
            str(out),
            "--quiet",
        ],
        env=node_env(hosts[0]),
    )
    return proc, out


def _wait_for_predictions(proc: subprocess.Popen[str], out: Path, count: int) -> int:
    """Block until the run has written `count` predictions: it is well under way."""
    deadline = time.monotonic() + 180  # a hang guard for start-up on a busy machine
    while True:
        written = len(out.read_text().splitlines()) if out.exists() else 0
        if written >= count:
            return written
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            _, err = proc.communicate()
            raise AssertionError(f"the run never got to {count} predictions:\n{err[-4000:]}")
        time.sleep(0.2)


def _finish(proc: subprocess.Popen[str], within: float) -> Run:
    started = time.monotonic()
    try:
        out, err = proc.communicate(timeout=within)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err = proc.communicate()
        raise AssertionError(f"the run had not ended {within:.0f} s later:\n{err[-4000:]}") from None
    return Run(proc.returncode, out, err, time.monotonic() - started)


def _kill_one(hosts: Hosts, cluster: RayCluster, actor_class: str, before: set[str]) -> dict[str, Any]:
    """Kill the process of this run's `actor_class` actor (SIGKILL, on its own host), as a crash would."""
    victim = next(
        a for a in cluster.actors(actor_class)[actor_class] if a["id"] not in before and a["state"] == "ALIVE"
    )
    hosts.at(cluster.node_ip(victim["node"])).kill(victim["pid"])
    return victim


def _restarts(cluster: RayCluster, actor_class: str, actor_id: str) -> int:
    return next(a["restarts"] for a in cluster.actors(actor_class)[actor_class] if a["id"] == actor_id)


def test_a_sensor_killed_mid_run_is_restarted_and_counted(hosts: Hosts, cluster: RayCluster) -> None:
    before = {a["id"] for a in cluster.actors("SensorActor")["SensorActor"]}
    proc, out = _start_live(hosts, cluster, "kill-sensor", duration="15")
    at_kill = _wait_for_predictions(proc, out, 10)

    victim = _kill_one(hosts, cluster, "SensorActor", before)
    run = _finish(proc, within=120)

    assert run.returncode == 0, run.stderr[-4000:]
    assert _restarts(cluster, "SensorActor", victim["id"]) == 1  # Ray saw the crash and restarted it
    assert run.summary["sensor_restarts"] == 1
    assert run.summary["predictions"] > at_kill


def test_an_inference_actor_killed_mid_run_is_restarted_and_counted(
    hosts: Hosts, cluster: RayCluster
) -> None:
    before = {a["id"] for a in cluster.actors("InferenceActor")["InferenceActor"]}
    proc, out = _start_live(hosts, cluster, "kill-inference", duration="15")
    at_kill = _wait_for_predictions(proc, out, 10)

    victim = _kill_one(hosts, cluster, "InferenceActor", before)
    run = _finish(proc, within=120)

    assert run.returncode == 0, run.stderr[-4000:]
    assert _restarts(cluster, "InferenceActor", victim["id"]) == 1
    assert run.summary["predictions"] > at_kill
    assert run.summary.get("inference_restarts") == 1, f"the summary must count the restart: {run.summary}"


def test_losing_the_sensor_host_ends_the_run_promptly_naming_the_node(
    hosts: Hosts, cluster: RayCluster
) -> None:
    """Last in the module: host 1's node is gone for good, with the rig that only it could run."""
    proc, out = _start_live(hosts, cluster, "lose-node", duration="600")
    at_kill = _wait_for_predictions(proc, out, 10)
    lost_ip, lost_id = hosts[1].ip, cluster.nodes[hosts[1].ip]

    (raylet,) = hosts[1].pids("raylet")
    hosts[1].kill(raylet)  # the node is lost: its workers, the rig's sensors and fuser, die with it
    run = _finish(proc, within=90)  # Ray declares the node dead within ~15 s; then the run must end

    assert "Traceback" not in run.stderr, run.stderr[-4000:]
    assert lost_ip in run.stderr or lost_id in run.stderr, run.stderr[-4000:]
    assert run.summary["predictions"] >= at_kill  # the summary is flushed, with what was predicted
