"""Two Ray nodes on one machine: placement by custom resources, and losing a node mid-run."""

import pytest
import ray
from ray.cluster_utils import Cluster

from tests.pipelines.conftest import run_pipeline, sim_config


@pytest.fixture(scope="module")
def two_nodes():
    if ray.is_initialized():
        ray.shutdown()
    cluster = Cluster(
        initialize_head=True,
        head_node_args={"num_cpus": 3, "resources": {"sensor_host": 1}, "include_dashboard": False},
    )
    worker = cluster.add_node(num_cpus=2, resources={"infer_host": 1})
    ray.init(address=cluster.address, configure_logging=False)
    cluster.wait_for_nodes()
    yield cluster, worker
    ray.shutdown()
    cluster.shutdown()


def _key(p):
    return (p.seq, p.label, tuple(p.probs), tuple(p.position or ()), tuple(p.modalities))


def _config(**inference):
    return sim_config(
        realtime=False,
        duration_s=3.0,
        inference={"actors": 2, "max_batch_size": 4, "num_cpus": 0.5, **inference},
    ).model_copy(deep=True)


def test_sensors_and_inference_run_where_their_resources_are(two_nodes):
    cluster, worker = two_nodes
    config = _config(resources={"infer_host": 0.01})
    config.rigs[0] = config.rigs[0].model_copy(update={"resources": {"sensor_host": 0.01}})
    placed = {}

    def record_placement(p, runner):
        if not placed:
            placed["sensors"] = {ray.get(s.actor.node_id.remote()) for s in runner.rigs[0].sensors}
            placed["inference"] = {h.info.node_id for h in runner.pool}

    preds, _, _ = run_pipeline(config, on_prediction=record_placement)
    head_id = cluster.head_node.node_id
    assert placed["sensors"] == {head_id}
    assert placed["inference"] == {worker.node_id}
    # Same predictions as on a single node: placement changes nothing but where work runs.
    single, _, _ = run_pipeline(_config())
    assert [_key(p) for p in preds] == [_key(p) for p in single]


def test_losing_the_worker_node_mid_run_recovers_on_the_head(two_nodes):
    cluster, worker = two_nodes
    reference, _, _ = run_pipeline(_config())
    config = _config()
    config.rigs[0] = config.rigs[0].model_copy(update={"resources": {"sensor_host": 0.01}})
    removed = {}

    def remove_worker(p, runner):
        if p.seq == 6 and not removed:
            removed["inference_on_worker"] = [h for h in runner.pool if h.info.node_id == worker.node_id]
            cluster.remove_node(worker)
            removed["done"] = True

    preds, _, _ = run_pipeline(config, on_prediction=remove_worker)
    assert removed.get("done") and removed["inference_on_worker"], (
        "an inference actor must have been on the worker"
    )
    assert [_key(p) for p in preds] == [_key(p) for p in reference]


def test_inference_keeps_off_the_pinned_sensor_host(two_nodes):
    # The rig pins its actors to the head (sensor_host); the pool asks for nothing special, and
    # a model on a sensor host's CPUs would starve its sensors: it goes to the other node.
    cluster, _ = two_nodes
    spare = cluster.add_node(num_cpus=2)  # the earlier test may have removed the worker
    config = _config()
    config.rigs[0] = config.rigs[0].model_copy(update={"resources": {"sensor_host": 0.01}})
    placed = {}

    def record_placement(p, runner):
        placed.setdefault("inference", {h.info.node_id for h in runner.pool})

    try:
        preds, _, _ = run_pipeline(config, on_prediction=record_placement)
    finally:
        cluster.remove_node(spare)
    assert preds and placed["inference"]
    assert cluster.head_node.node_id not in placed["inference"], placed


def test_start_waits_for_the_node_a_rig_needs(two_nodes):
    import os
    import shutil
    import signal
    import subprocess
    import time

    cluster, _ = two_nodes
    config = _config()
    config.rigs[0] = config.rigs[0].model_copy(update={"resources": {"late_host": 0.01}})
    config = config.model_copy(update={"flow": config.flow.model_copy(update={"wait_for_nodes_s": 90.0})})
    # The node an autoscaler would bring: a real `ray start` joining a few seconds after the run
    # asked for it.
    ray_cli = shutil.which("ray") or os.path.join(os.path.dirname(os.sys.executable), "ray")
    join = (
        f"sleep 3; exec {ray_cli} start --address={cluster.address} --num-cpus=1 "
        "--resources='{\"late_host\": 1}' --disable-usage-stats --block"
    )
    node = subprocess.Popen(["sh", "-c", join], start_new_session=True, stdout=subprocess.DEVNULL)
    started = time.monotonic()
    placed = {}

    def record_placement(p, runner):
        placed.setdefault("sensors", {ray.get(s.actor.node_id.remote()) for s in runner.rigs[0].sensors})
        placed.setdefault(
            "late", {n["NodeID"] for n in ray.nodes() if n["Alive"] and "late_host" in n["Resources"]}
        )

    try:
        preds, _, _ = run_pipeline(config, on_prediction=record_placement)
    finally:
        os.killpg(node.pid, signal.SIGTERM)
        node.wait(timeout=60)
    assert time.monotonic() - started >= 3.0
    assert preds and len(placed["late"]) == 1 and placed["sensors"] == placed["late"]
