"""The live and replay drivers' bookkeeping, without Ray: a fake port answers their calls."""

from __future__ import annotations

import pytest

from fusion.flow.messages import (
    CollectCall,
    Dispatched,
    Failed,
    InferCall,
    Linked,
    Lost,
    Predicted,
    PushCall,
    Queued,
    ReadCall,
    StreamState,
    Taken,
    WatchCall,
)
from fusion.sample import Modality
from pipelines.drivers import COLLECT_WAIT_S, LiveDriver, ReplayDriver
from pipelines.recovery import Recovery
from tests.flow.helpers import prediction, sample
from tests.pipelines.conftest import sim_config
from tests.pipelines.fake_port import FakePort, Ref, make_state


def live(got=None):
    state = make_state(sim_config(realtime=True, duration_s=5), lossless=False, got=got)
    port = FakePort()
    return state, port, LiveDriver(state, port, Recovery(state, port))


def replay(got=None):
    state = make_state(sim_config(realtime=False, duration_s=1), lossless=True, got=got)
    port = FakePort()
    return state, port, ReplayDriver(state, port, Recovery(state, port))


def test_live_begin_links_each_fuser_and_streams_every_sensor():
    state, port, driver = live()
    state.disabled = frozenset({("sim", "mic0")})
    driver.begin()
    assert state.rigs[0].link == ("n1", "/tmp/sim.sock")
    assert sorted(args[0] for args in port.made("stream_to")) == [
        ("sim", s) for s in ("cam0", "lidar0", "mic0")
    ]
    assert port.made("set_enabled") == [(("sim", "mic0"), False)]  # off before it streams
    assert set(state.stats.transport) == {"sim/cam0", "sim/mic0", "sim/lidar0"}


def test_live_schedule_keeps_one_collect_per_fuser_and_watches_each_sensor_once_a_second():
    state, port, driver = live()
    driver.schedule()
    driver.schedule()
    assert port.made("collect") == [("sim", COLLECT_WAIT_S)]  # one long poll in flight, not two
    assert len(port.made("stream_state")) == 3
    assert len(state.calls(CollectCall)) == 1 and len(state.calls(WatchCall)) == 3
    for ref in [r for r, c in state.inflight.items() if isinstance(c, WatchCall)]:
        state.inflight.pop(ref)
    driver.schedule()
    assert len(port.made("stream_state")) == 3  # answered, but the next watch is not due yet


def test_live_collected_items_are_booked_in_order():
    got = []
    state, port, driver = live(got)
    rig = state.rigs[0]
    rig.linked = 1  # sample 4 went over the link before this collect
    pred_ref = Ref("prediction", ())
    driver.on_result(
        CollectCall(rig="sim"),
        Ref("collect", ()),
        [
            Queued(sample=sample(0, "sim")),
            Dispatched(sample=sample(1, "sim"), slot=0, ref=pred_ref),
            Linked(sample=sample(2, "sim"), slot=0),
            Predicted(prediction=prediction(2, "sim"), slot=0),
            Lost(sample=sample(4, "sim"), slot=0),
        ],
    )
    # Queued waits for the driver, after the resubmitted one (first in line).
    assert [s.seq for s in rig.pending] == [4, 0]
    assert state.inflight[pred_ref] == InferCall(slot=0, batch=(sample(1, "sim"),))
    assert rig.linked == 0  # +1 linked, -1 predicted, -1 lost
    assert state.stats.fuser_dispatched == 2 and state.stats.resubmitted == 1
    # Two sent (+2), one answered and one lost (-2): the actor is free again.
    assert state.inference.total == 0
    assert port.made("info") == [(100,)]  # the lost actor is asked which process it is now
    assert state.sink.written == 0  # seq 2 waits in the ordered sink for 0 and 1
    assert not got


def test_live_failed_inference_fails_the_run_naming_rig_and_sample():
    _, _, driver = live()
    with pytest.raises(RuntimeError, match="rig sim: inference failed on sample 7: boom"):
        driver.on_result(
            CollectCall(rig="sim"), Ref("c", ()), [Failed(sample=sample(7, "sim"), slot=0, why="boom")]
        )


def test_live_stream_that_stopped_is_restarted_and_streams_again():
    state, port, driver = live()
    driver.begin()
    stopped = StreamState(
        streaming=False, error="device gone", ended=False, delivered=30, discarded=2, newest=3.0
    )
    # The restarted actor answers its start at once.
    port.start_sensor = lambda s, k: (port.calls.append(("start_sensor", (s.key, k))), "ok")[1]
    port.answer("ok", 0)
    driver.on_result(WatchCall(sensor=("sim", "cam0")), Ref("w", ()), stopped)
    assert port.made("start_sensor") == [(("sim", "cam0"), 0)]  # live: from now, nothing skipped
    assert [a[0] for a in port.made("stream_to")].count(("sim", "cam0")) == 2
    assert state.stats.sensor_restarts == 1
    assert state.stats.dropped["sensor_off"] == 2


def test_live_stream_that_ended_is_not_restarted():
    state, port, driver = live()
    ended = StreamState(streaming=False, error=None, ended=True, delivered=30, discarded=0, newest=3.0)
    driver.on_result(WatchCall(sensor=("sim", "cam0")), Ref("w", ()), ended)
    assert not port.made("start_sensor") and state.sensor(("sim", "cam0")).ended


def test_replay_reads_in_lockstep_and_pushes_frames_by_reference():
    state, port, driver = replay()
    driver.schedule()
    reads = {c.sensor: c for c in state.calls(ReadCall)}
    assert set(reads) == {("sim", "cam0"), ("sim", "mic0"), ("sim", "lidar0")}
    driver.schedule()
    assert len(port.made("take")) == 3  # one read in flight per sensor
    ref, call = next((r, c) for r, c in state.inflight.items() if c.sensor == ("sim", "cam0"))
    state.inflight.pop(ref)
    driver.on_result(call, ref, Taken(count=3, newest=0.1))
    assert port.made("push") == [("sim", (call.frames,))]  # the frames' reference, not the frames
    assert len(state.calls(PushCall)) == 1  # answered by the samples it fused
    assert state.rigs[0].window.buffered_frames == 0


def test_replay_frames_of_a_switched_off_sensor_are_dropped_and_counted():
    state, port, driver = replay()
    state.disabled = frozenset({("sim", "mic0")})
    driver.schedule()
    ref, call = next((r, c) for r, c in state.inflight.items() if c.sensor == ("sim", "mic0"))
    driver.on_result(call, ref, Taken(count=5, newest=0.2))
    assert state.stats.dropped["sensor_off"] == 5
    assert state.stats.sensor_off[("sim", Modality.MICROPHONE)] == 5
    assert not port.made("push")


def test_replay_pushed_samples_wait_for_inference_and_the_run_ends_when_all_answered():
    state, port, driver = replay()
    rig = state.rigs[0]
    for s in rig.sensors:
        s.ended = True
    driver._push(rig)  # every stream ended: the fuser is told to finish
    ((ref, call),) = state.inflight.items()
    assert port.made("finish") == [("sim",)]
    state.inflight.pop(ref)
    driver.on_result(call, ref, [sample(0, "sim"), sample(1, "sim")])
    assert [s.seq for s in rig.pending] == [0, 1]
    assert not driver.done()  # samples still wait for their predictions
    rig.pending.take(2)
    assert driver.done()
