"""A live fuser's dispatch books, without Ray: room per actor, link replies, a lost link."""

from fusion.flow.messages import Dispatched, Failed, InferFailed, Inferred, Linked, Lost, Predicted, Queued
from fusion.flow.outbox import FuserOutbox
from tests.flow.helpers import prediction, sample


def test_free_slot_counts_ray_calls_and_linked_samples_against_the_bound():
    box = FuserOutbox(slots=2, max_in_flight=2)
    box.linked(sample(0), 0)
    assert box.free_slot([0, 1]) == 0  # 1 linked at 0, 1 call at 1: the first of equals
    box.linked(sample(1), 0)
    assert box.free_slot([0, 1]) == 1
    assert box.free_slot([0, 2]) is None


def test_an_empty_pool_has_no_room():
    assert FuserOutbox(slots=0, max_in_flight=4).free_slot([]) is None


def test_the_outbox_hands_over_in_order_and_wakes_only_for_what_the_driver_must_act_on():
    box = FuserOutbox(slots=1, max_in_flight=4)
    gen = box.open_link(0)
    box.linked(sample(0), 0)
    assert not box.wake  # the prediction will wake the driver, not the hand-over
    ref = object()
    box.called(sample(1), 0, ref)
    assert box.wake
    box.reply(0, gen, Inferred(seq=0, prediction=prediction(0)))
    box.queued(sample(2))
    assert box.take() == [
        Linked(sample=sample(0), slot=0),
        Dispatched(sample=sample(1), slot=0, ref=ref),
        Predicted(prediction=prediction(0), slot=0),
        Queued(sample=sample(2)),
    ]
    assert box.take() == [] and not box.wake


def test_a_failed_batch_names_its_sample():
    box = FuserOutbox(slots=1, max_in_flight=4)
    gen = box.open_link(0)
    box.linked(sample(7), 0)
    box.take()
    box.reply(0, gen, InferFailed(seq=7, why="ValueError: nan"))
    assert box.take() == [Failed(sample=sample(7), slot=0, why="ValueError: nan")]


def test_a_lost_link_gives_back_what_it_held_in_seq_order_and_ignores_its_late_replies():
    box = FuserOutbox(slots=2, max_in_flight=4)
    old = box.open_link(1)
    for seq in (5, 3, 4):
        box.linked(sample(seq), 1)
    box.take()
    assert [s.seq for s in box.link_lost(1)] == [3, 4, 5]
    assert box.take() == [Lost(sample=sample(s), slot=1) for s in (3, 4, 5)]
    box.reply(1, old, Inferred(seq=4, prediction=prediction(4)))  # the dead link's last words
    new = box.open_link(1)
    box.linked(sample(6), 1)
    box.reply(1, old, Inferred(seq=6, prediction=prediction(6)))
    assert box.take() == [Linked(sample=sample(6), slot=1)]
    box.reply(1, new, Inferred(seq=6, prediction=prediction(6)))
    assert box.take() == [Predicted(prediction=prediction(6), slot=1)]
    assert box.free_slot([0, 0]) == 0


def test_a_retired_link_is_not_heard_from_again():
    box = FuserOutbox(slots=1, max_in_flight=4)
    gen = box.open_link(0)
    box.linked(sample(0), 0)
    box.take()
    box.retire(0)
    box.reply(0, gen, Inferred(seq=0, prediction=prediction(0)))
    assert box.take() == []


def test_slot_calls_forget_answered_calls_and_hand_back_answered_relinks():
    from fusion.flow.outbox import SlotCalls

    awaited = SlotCalls(2)
    a, b, c, asked = object(), object(), object(), object()
    for slot, ref in ((0, a), (0, b), (1, c)):
        awaited.called(slot, ref)
    awaited.relink(1, asked)
    answered = {id(a)}
    done = lambda refs: [r for r in refs if id(r) in answered]  # noqa: E731
    assert awaited.settle(done) == []  # the listen has not answered yet
    assert awaited.unanswered() == [1, 1]
    answered |= {id(c), id(asked)}
    assert awaited.settle(done) == [(1, asked)]
    assert awaited.unanswered() == [1, 0]
    assert awaited.settle(done) == []  # handed back once: the caller reconnects or asks again
