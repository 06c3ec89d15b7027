"""The start-up resource arithmetic, without Ray: what can never be placed, named by its key."""

from __future__ import annotations

from fusion.flow.resources import Demand, avoid_nodes, shortfalls

HEAD = {"CPU": 4.0, "memory": 8e9}
SENSOR_HOST = {"CPU": 1.0, "rig0_host": 1.0}


def rig(amount: float, sensors: int = 3) -> list[Demand]:
    keys = {"rig0_host": "rigs[0].resources.rig0_host"}
    return [
        Demand(
            what="rig sim's sensors",
            count=sensors,
            bundle={"CPU": 0.05, "rig0_host": amount},
            keys={"CPU": "flow.sensor_num_cpus", **keys},
        ),
        Demand(
            what="rig sim's fuser",
            count=1,
            bundle={"CPU": 0.1, "rig0_host": amount},
            keys={"CPU": "flow.fuser_num_cpus", **keys},
        ),
    ]


def test_a_whole_unit_per_actor_is_four_units_for_a_three_sensor_rig():
    # Measured: accepted at start, then a 120 s hang and GetTimeoutError.
    (problem,) = shortfalls(rig(1.0), [HEAD, SENSOR_HOST])
    assert problem.startswith("rigs[0].resources.rig0_host: 4 rig0_host needed in all")
    assert "rig sim's sensors: 3 x 1" in problem and "rig sim's fuser: 1 x 1" in problem
    assert "the cluster has 1" in problem and "0.01" in problem


def test_fractions_pin_without_limiting():
    assert shortfalls(rig(0.01), [HEAD, SENSOR_HOST]) == []


def test_a_resource_no_node_has_is_named_with_what_nodes_offer():
    problems = shortfalls(rig(0.01), [HEAD])
    assert problems[0].startswith("rigs[0].resources.rig0_host: one of rig sim's sensors needs")
    assert "no node has that" in problems[0]


def test_an_actor_bigger_than_any_node_fails_even_when_the_sum_fits():
    inference = Demand(
        what="the inference actors", count=1, bundle={"CPU": 3.0}, keys={"CPU": "inference.num_cpus"}
    )
    # 5 CPUs in all, but an actor lives on one node and none has 3.
    (problem,) = shortfalls([inference], [{"CPU": 2.5}, {"CPU": 2.5}])
    assert problem.startswith("inference.num_cpus: one of the inference actors needs {CPU: 3}")
    assert "the most any node has: {CPU: 2.5}" in problem


def test_cpu_sums_name_every_key_that_asks():
    many = Demand(
        what="the inference actors", count=4, bundle={"CPU": 1.0}, keys={"CPU": "inference.num_cpus"}
    )
    (problem,) = shortfalls([*rig(0.01), many], [{"CPU": 2.0}, {"CPU": 1.0, "rig0_host": 1.0}])
    assert problem.startswith("flow.sensor_num_cpus, flow.fuser_num_cpus, inference.num_cpus: 4.25 CPU")
    assert "the cluster has 3" in problem and "0.01" not in problem


def test_zero_requests_need_nothing():
    free = Demand(
        what="the inference actors",
        count=2,
        bundle={"CPU": 0.0, "GPU": 0.0},
        keys={"CPU": "inference.num_cpus", "GPU": "inference.num_gpus"},
    )
    assert shortfalls([free], [{"CPU": 1.0}]) == []


def test_inference_avoids_pinned_sensor_hosts_that_cannot_spare_them():
    nodes = {"head": HEAD, "sensors": SENSOR_HOST, "small": {"CPU": 0.5}}
    assert avoid_nodes(nodes, {"rig0_host"}, {"CPU": 1.0}) == ["head"]
    # No node but the sensor host can hold it: nothing to prefer, Ray decides.
    assert avoid_nodes({"sensors": SENSOR_HOST}, {"rig0_host"}, {"CPU": 1.0}) == []
