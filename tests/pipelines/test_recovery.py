"""Recovery's decisions, without Ray: what is resubmitted, restarted, or ends the run."""

from __future__ import annotations

import pytest

from fusion.flow.messages import InferCall, ReadCall
from fusion.flow.recovery import TooManyRestarts
from pipelines import recovery as rec
from pipelines.port import ActorLost, NodeView
from pipelines.recovery import NodeLost, Recovery
from tests.flow.helpers import sample
from tests.pipelines.conftest import sim_config
from tests.pipelines.fake_port import FakePort, info, make_state


def setup(*, lossless: bool, **top):
    top.setdefault("inference", {"actors": 2, "max_batch_size": 4})
    config = sim_config(realtime=not lossless, duration_s=1, **top)
    state = make_state(config, lossless=lossless, actors=2)
    port = FakePort()
    return state, port, Recovery(state, port)


def answering(port: FakePort) -> None:
    """The restarted actors answer their `start` at once."""

    def start(sensor, resume_from):
        port.calls.append(("start_sensor", (sensor.key, resume_from)))
        ref = ("start", sensor.key, resume_from, len(port.calls))
        port.answer(ref, resume_from)
        return ref

    port.start_sensor = start


def test_a_lost_inference_call_is_resubmitted_first_in_line():
    state, port, recovery = setup(lossless=True)
    rig = state.rigs[0]
    rig.pending.extend([sample(5, "sim")])
    state.inference.sent(1)
    batch = (sample(3, "sim"), sample(4, "sim"))
    assert recovery.recover(InferCall(slot=1, batch=batch), ActorLost("died")) is None
    assert [s.seq for s in rig.pending] == [3, 4, 5]
    assert state.stats.resubmitted == 2
    assert state.inference.total == 0
    assert port.made("info") == [(101,)]  # slot 1 asked once which process it is now


def test_a_replay_sensor_resumes_after_its_last_delivered_frame():
    state, port, recovery = setup(lossless=True)
    answering(port)
    cam = state.sensor(("sim", "cam0"))
    cam.delivered = 42
    assert recovery.recover(ReadCall(sensor=cam.key, frames=None), ActorLost("died")) is cam
    assert port.made("start_sensor") == [(cam.key, 42)]
    assert state.stats.sensor_restarts == 1


def test_a_sensor_past_its_restart_limit_ends_the_run():
    state, port, recovery = setup(lossless=True, flow={"max_restarts": 1})
    answering(port)
    cam = state.sensor(("sim", "cam0"))
    recovery.restart_sensor(cam, ActorLost("died"))
    with pytest.raises(TooManyRestarts, match="sensor cam0: actor died 2 times"):
        recovery.restart_sensor(cam, ActorLost("died again"))


def test_restarts_count_new_processes_not_failed_calls():
    _, port, recovery = setup(lossless=False)
    counter = recovery.restarts
    counter.lost(0)
    counter.lost(0)  # the same death failing a second call: one question
    assert len(port.made("info")) == 1
    (ref,) = counter.asking.values()
    port.answer(ref, info(pid=999))
    assert counter.poll() == 1
    counter.lost(0)
    (ref,) = counter.asking.values()
    port.answer(ref, info(pid=999))  # still the same process: no new restart
    assert counter.poll() == 1
    counter.lost(1)
    (ref,) = counter.asking.values()
    port.fail(ref, ActorLost("restarting"))  # asked too early: asked again
    assert counter.poll() == 1 and len(counter.asking) == 1


def test_a_lost_node_ends_the_run_only_when_no_live_node_can_take_the_rig():
    rig = {"resources": {"rig0_host": 1.0}}
    state, port, _ = setup(lossless=True)
    pinned = state.config.model_copy(update={"rigs": [state.config.rigs[0].model_copy(update=rig)]})
    state.config = pinned
    port.nodes = {
        "head": NodeView(address="10.0.0.1", resources={"CPU": 2.0}),
        "w1": NodeView(address="10.0.0.2", resources={"CPU": 2.0, "rig0_host": 1.0}),
    }
    watch = rec.NodeWatch(port)
    watch.check(state, "sim")  # nothing lost
    port.nodes = {
        "head": port.nodes["head"],
        "w2": NodeView(address="10.0.0.3", resources={"rig0_host": 1.0}),
    }
    watch.check(state, "sim")  # w1 lost, but w2 offers what the rig needs
    del port.nodes["w2"]
    with pytest.raises(NodeLost, match=r"lost 10.0.0.2 \(node w1\).*rig sim's actors need rig0_host") as lost:
        watch.check(state, "sim")
    assert lost.value.rig == "sim"


def test_waiting_for_a_lost_node_gives_up_after_wait_for_nodes_s(monkeypatch):
    state, port, recovery = setup(lossless=True, flow={"wait_for_nodes_s": 0.3})
    monkeypatch.setattr(rec, "CHECK_EVERY_S", 0.05)
    pinned = state.config.model_copy(
        update={"rigs": [state.config.rigs[0].model_copy(update={"resources": {"rig0_host": 1.0}})]}
    )
    state.config = pinned
    port.nodes = {"w1": NodeView(address="10.0.0.2", resources={"rig0_host": 1.0})}
    recovery.nodes = rec.NodeWatch(port)
    port.nodes = {}
    with pytest.raises(NodeLost):
        recovery.fuser_lost("sim", ActorLost("fuser died"))
