"""The typed messages: they survive the trip between processes, and a wrong one is named."""

import pickle

import pytest

from fusion.flow.messages import (
    Collected,
    Dispatched,
    Failed,
    InferFailed,
    Inferred,
    Linked,
    Lost,
    Predicted,
    Queued,
    StreamState,
    Taken,
    check_link_reply,
)
from tests.flow.helpers import prediction, sample


@pytest.mark.parametrize("reply", [Inferred(seq=3, prediction=prediction(3)), InferFailed(seq=3, why="boom")])
def test_a_link_reply_passes_its_check(reply):
    assert check_link_reply(reply) is None


@pytest.mark.parametrize(
    ("message", "named"),
    [
        (("prediction", 3, None), "tuple"),
        (prediction(3), "Prediction"),
        (Taken(count=1, newest=0.0), "Taken"),
    ],
)
def test_anything_else_on_an_inference_link_is_refused_naming_its_type(message, named):
    assert check_link_reply(message) == f"expected a prediction reply, got {named}"


def test_messages_round_trip_through_pickle_as_they_cross_processes():
    messages = [
        Queued(sample=sample(1)),
        Linked(sample=sample(2), slot=1),
        Predicted(prediction=prediction(2), slot=1),
        Lost(sample=sample(4), slot=0),
        Failed(sample=sample(5), slot=0, why="ValueError: nan"),
        StreamState(streaming=False, error="gone", ended=False, delivered=7, discarded=2, newest=1.5),
        Taken(count=3, newest=0.2),
    ]
    assert [pickle.loads(pickle.dumps(m, protocol=5)) for m in messages] == messages


def test_match_tells_every_collected_kind_apart():
    def kind(item: Collected) -> str:
        match item:
            case Queued():
                return "queued"
            case Dispatched(slot=slot):
                return f"call to {slot}"
            case Linked(slot=slot):
                return f"link to {slot}"
            case Predicted(prediction=p):
                return f"prediction {p.seq}"
            case Lost(sample=s):
                return f"lost {s.seq}"
            case Failed(why=why):
                return f"failed: {why}"

    items: list[Collected] = [
        Queued(sample=sample(0)),
        Dispatched(sample=sample(1), slot=2, ref=object()),
        Linked(sample=sample(2), slot=0),
        Predicted(prediction=prediction(2), slot=0),
        Lost(sample=sample(3), slot=0),
        Failed(sample=sample(4), slot=1, why="boom"),
    ]
    assert [kind(i) for i in items] == [
        "queued",
        "call to 2",
        "link to 0",
        "prediction 2",
        "lost 3",
        "failed: boom",
    ]
