"""Queueing, batch planning and actor choice, without Ray."""

import pytest

from fusion.flow.dispatch import BatchPlanner, Dispatcher, InferencePool, PendingQueue, RigQueue, Send
from tests.flow.helpers import sample


def seqs(samples) -> list[int]:
    return [s.seq for s in samples]


def test_live_queue_drops_the_oldest_past_its_capacity_and_counts_them():
    queue = PendingQueue(capacity=3, drop_oldest=True)
    assert queue.extend(sample(i) for i in range(2)) == []
    gone = queue.extend(sample(i) for i in range(2, 6))
    assert seqs(gone) == [0, 1, 2]
    assert seqs(queue) == [3, 4, 5]
    assert queue.dropped == 3 and queue.max_depth == 3


def test_replay_queue_never_drops_and_says_when_it_is_full():
    queue = PendingQueue(capacity=2, drop_oldest=False)
    assert queue.extend(sample(i) for i in range(5)) == []
    assert seqs(queue) == [0, 1, 2, 3, 4] and queue.full and queue.dropped == 0
    assert queue.max_depth == 5


def test_requeued_samples_go_first_in_their_order_and_the_next_extend_trims_them_first():
    queue = PendingQueue(capacity=3, drop_oldest=True)
    queue.extend([sample(5), sample(6)])
    queue.requeue([sample(2), sample(3)])
    assert seqs(queue) == [2, 3, 5, 6]  # over capacity until samples come in again
    assert seqs(queue.extend([sample(7)])) == [2, 3]
    assert seqs(queue) == [5, 6, 7]


@pytest.mark.parametrize("capacity", [0, -1])
def test_a_queue_without_room_is_refused(capacity):
    with pytest.raises(ValueError, match=f"capacity must be at least 1, got {capacity}"):
        PendingQueue(capacity=capacity, drop_oldest=True)


def test_fixed_batches_wait_until_full_and_only_the_last_one_is_short():
    planner = BatchPlanner(size=4, fixed=True)
    queue = PendingQueue(capacity=8, drop_oldest=False)
    queue.extend(sample(i) for i in range(6))
    assert seqs(planner.next_batch(queue, finished=False)) == [0, 1, 2, 3]
    assert planner.next_batch(queue, finished=False) is None  # 2 left: wait for more
    assert seqs(planner.next_batch(queue, finished=True)) == [4, 5]
    assert planner.next_batch(queue, finished=True) is None


def test_live_batches_are_single_samples():
    planner = BatchPlanner(size=4, fixed=False)
    queue = PendingQueue(capacity=8, drop_oldest=True)
    queue.extend(sample(i) for i in range(2))
    assert seqs(planner.next_batch(queue, finished=False)) == [0]
    assert seqs(planner.next_batch(queue, finished=False)) == [1]


def test_pool_picks_the_least_busy_actor_and_refuses_past_the_bound():
    pool = InferencePool(slots=2, max_in_flight=2)
    picked = []
    while (slot := pool.free_slot()) is not None:
        pool.sent(slot)
        picked.append(slot)
    assert picked == [0, 1, 0, 1] and pool.total == 4
    pool.answered(1)
    assert pool.free_slot() == 1


def test_dispatcher_plans_until_no_actor_has_room():
    pool = InferencePool(slots=2, max_in_flight=1)
    dispatcher = Dispatcher(pool=pool, planner=BatchPlanner(size=2, fixed=True))
    a, b = PendingQueue(capacity=8, drop_oldest=False), PendingQueue(capacity=8, drop_oldest=False)
    a.extend(sample(i, "a") for i in range(5))
    b.extend(sample(i, "b") for i in range(2))
    sends = dispatcher.plan([RigQueue(pending=a), RigQueue(pending=b)])
    assert [(s.slot, s.batch[0].rig, seqs(s.batch)) for s in sends] == [(0, "a", [0, 1]), (1, "a", [2, 3])]
    assert dispatcher.plan([RigQueue(pending=a), RigQueue(pending=b)]) == []  # every actor busy
    pool.answered(0)
    # Rig a's last sample waits for a full batch (not finished), so rig b goes.
    assert dispatcher.plan([RigQueue(pending=a), RigQueue(pending=b)]) == [
        Send(slot=0, batch=(sample(0, "b"), sample(1, "b")))
    ]
    pool.answered(1)
    assert [seqs(s.batch) for s in dispatcher.plan([RigQueue(pending=a, finished=True)])] == [[4]]
