"""Recovery bookkeeping, without Ray: where a sensor resumes, the restart limit, resubmission."""

import pytest

from fusion.flow.dispatch import BatchPlanner, Dispatcher, InferencePool, PendingQueue, RigQueue
from fusion.flow.messages import StreamState, Taken
from fusion.flow.recovery import SensorProgress, TooManyRestarts
from tests.flow.helpers import sample


def test_a_replay_sensor_resumes_after_the_last_frame_it_delivered():
    s = SensorProgress(rig="r", sensor_id="cam")
    s.on_read(Taken(count=4, newest=0.3))
    s.on_read(Taken(count=0, newest=0.9))  # an empty read moves nothing
    assert (s.delivered, s.latest) == (4, 0.3)
    assert s.restart(live=False, max_restarts=3) == 4


def test_a_live_sensor_streams_again_from_now():
    s = SensorProgress(rig="r", sensor_id="cam")
    s.on_state(StreamState(streaming=True, error=None, ended=False, delivered=9, discarded=2, newest=1.0))
    assert (s.delivered, s.discarded, s.latest, s.ended) == (9, 2, 1.0, False)
    assert s.restart(live=True, max_restarts=3) == 0


def test_a_live_stream_that_ended_is_not_restarted():
    s = SensorProgress(rig="r", sensor_id="cam")
    s.on_state(StreamState(streaming=False, error=None, ended=True, delivered=9, discarded=0, newest=1.0))
    assert s.ended


def test_restarts_past_the_limit_fail_naming_the_sensor():
    s = SensorProgress(rig="r", sensor_id="cam")
    s.restart(live=True, max_restarts=1)
    with pytest.raises(TooManyRestarts, match="rig r sensor cam: actor died 2 times"):
        s.restart(live=True, max_restarts=1)


def test_a_batch_lost_with_its_actor_is_sent_again_first_and_whole():
    pool = InferencePool(slots=2, max_in_flight=1)
    dispatcher = Dispatcher(pool=pool, planner=BatchPlanner(size=2, fixed=True))
    queue = PendingQueue(capacity=8, drop_oldest=False)
    queue.extend(sample(i) for i in range(6))
    rigs = [RigQueue(pending=queue)]
    first, second = dispatcher.plan(rigs)
    pool.answered(first.slot)  # its actor died: the call came back with an error
    queue.requeue(first.batch)
    (again,) = dispatcher.plan(rigs)
    assert again.slot == first.slot and again.batch == first.batch  # the same bytes in the same batch
    pool.answered(second.slot)
    pool.answered(again.slot)
    assert [s.batch for s in dispatcher.plan(rigs)] == [(sample(4), sample(5))]
