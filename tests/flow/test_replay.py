"""Replay's reading plan, without Ray: lockstep across sensors, pushes released in send order."""

import math

from fusion.flow.messages import Taken
from fusion.flow.recovery import SensorProgress
from fusion.flow.replay import Finish, Push, PushWindow, lockstep_reads
from tests.flow.helpers import sample


def sensors(**latest: float) -> list[SensorProgress]:
    return [SensorProgress(rig="r", sensor_id=k, latest=v) for k, v in latest.items()]


def ids(chosen) -> list[str]:
    return [s.sensor_id for s in chosen]


def test_no_sensor_reads_more_than_the_lookahead_ahead_of_the_slowest():
    cam, mic, lidar = sensors(cam=1.0, mic=0.4, lidar=0.9)
    assert ids(lockstep_reads([cam, mic, lidar], reading=set())) == ["mic", "lidar"]
    mic.on_read(Taken(count=3, newest=0.6))
    assert ids(lockstep_reads([cam, mic, lidar], reading=set())) == ["cam", "mic", "lidar"]


def test_a_sensor_being_read_or_ended_is_not_read_and_does_not_hold_the_others_back():
    cam, mic, lidar = sensors(cam=2.0, mic=0.1, lidar=2.1)
    mic.on_read(None)
    assert mic.ended
    assert ids(lockstep_reads([cam, mic, lidar], reading={("r", "cam")})) == ["lidar"]


def test_lockstep_reads_in_a_deterministic_order_from_a_cold_start():
    group = sensors(cam=-math.inf, mic=-math.inf, lidar=-math.inf)
    order = []
    for step in range(6):  # each read gives 0.3 s of frames; the plan picks who goes next
        for s in lockstep_reads(group, reading=set()):
            order.append(s.sensor_id)
            s.on_read(Taken(count=1, newest=(step + 1) * {"cam": 0.3, "mic": 0.2, "lidar": 0.4}[s.sensor_id]))
    assert order[:6] == ["cam", "mic", "lidar", "cam", "mic", "lidar"]
    assert max(s.latest for s in group) - min(s.latest for s in group) <= 0.5 + 0.4


def test_pushes_carry_every_buffered_read_and_stop_at_the_bound():
    window = PushWindow(max_pushes=2)
    window.buffer("f0", 2)
    window.buffer("f1", 3)
    assert window.buffered_frames == 5
    assert window.next(all_ended=False) == Push(frames=("f0", "f1"))
    window.sent("p0")
    assert window.next(all_ended=False) is None  # nothing buffered
    window.buffer("f2", 1)
    assert window.next(all_ended=False) == Push(frames=("f2",))
    window.sent("p1")
    window.buffer("f3", 1)
    assert window.next(all_ended=False) is None  # two in flight


def test_samples_are_released_in_the_order_pushes_were_sent():
    window = PushWindow()
    for token in ("p0", "p1", "p2"):
        window.buffer(token, 1)
        window.next(all_ended=False)
        window.sent(token)
    assert window.answered("p1", [sample(1)]) == []  # behind p0
    assert [s.seq for s in window.answered("p0", [sample(0)])] == [0, 1]
    assert [s.seq for s in window.answered("p2", [sample(2), sample(3)])] == [2, 3]


def test_finish_comes_once_every_sensor_ended_and_everything_was_pushed():
    window = PushWindow()
    window.buffer("f0", 1)
    assert window.next(all_ended=True) == Push(frames=("f0",))
    window.sent("p0")
    assert window.next(all_ended=True) == Finish()
    window.sent("fin")
    assert window.next(all_ended=True) is None and not window.finished
    window.answered("p0", [sample(0)])
    assert not window.finished
    assert [s.seq for s in window.answered("fin", [sample(1)])] == [1]
    assert window.finished
