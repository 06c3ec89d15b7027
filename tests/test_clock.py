"""The one Pacer (timestamps mapped onto a clock at a speed) and the one DeviceBuffer (a real-time
device's hand-over), on a fake clock."""

from __future__ import annotations

import math

import pytest

from fusion.clock import DeviceBuffer, Pacer
from tests.fakes import FakeClock


def test_the_first_item_anchors_and_the_rest_keep_their_spacing_at_speed() -> None:
    clock = FakeClock()
    pacer = Pacer(2.0, clock=clock, sleep=clock.sleep)
    stamps = [7.0, 7.5, 7.5, 9.0]
    handed = []
    for t in stamps:
        assert pacer.wait(t)
        handed.append(clock.now)
    assert handed == pytest.approx([100.0, 100.25, 100.25, 101.0])
    assert len(clock.sleeps) == 2  # equal timestamps do not sleep again


def test_a_consumer_behind_schedule_is_not_slept_and_nothing_is_skipped() -> None:
    clock = FakeClock()
    pacer = Pacer(1.0, clock=clock, sleep=clock.sleep)
    pacer.wait(0.0)
    clock.now += 5.0
    assert pacer.delay(1.0) == pytest.approx(-4.0)
    assert pacer.wait(1.0) and pacer.wait(2.0)
    assert clock.sleeps == []


def test_without_a_speed_everything_is_due_at_once() -> None:
    clock = FakeClock()
    pacer = Pacer(None, clock=clock, sleep=clock.sleep)
    assert pacer.delay(1e9) == 0.0 and pacer.due(1e9) == -math.inf
    assert pacer.wait(0.0) and pacer.wait(1e9)
    assert clock.sleeps == []


def test_a_fixed_anchor_takes_timestamps_as_times_on_the_clock() -> None:
    clock = FakeClock(now=1000.0)
    pacer = Pacer(1.0, clock=clock, sleep=clock.sleep, anchor=(0.0, 0.0))
    assert pacer.due(1000.4) == 1000.4
    assert pacer.wait(1000.4)
    assert clock.now == pytest.approx(1000.4)


def test_a_deadline_before_the_item_is_due_sleeps_only_until_the_deadline() -> None:
    clock = FakeClock(now=10.0)
    pacer = Pacer(1.0, clock=clock, sleep=clock.sleep, anchor=(0.0, 0.0))
    assert not pacer.wait(12.0, deadline=11.0)
    assert clock.now == pytest.approx(11.0)
    assert not pacer.wait(12.0, deadline=10.5)  # a deadline already passed: a poll, no sleep
    assert clock.sleeps == [pytest.approx(1.0)]
    assert pacer.wait(12.0, deadline=12.0)
    assert clock.now == pytest.approx(12.0)


@pytest.mark.parametrize("speed", [0.0, -1.0, math.inf, math.nan])
def test_a_speed_that_is_not_a_positive_number_is_refused(speed: float) -> None:
    with pytest.raises(ValueError, match="speed must be a positive number or None"):
        Pacer(speed)


# --- DeviceBuffer: a real-time device's hand-over ---------------------------------------------


def _buffer(clock: FakeClock, lost: list[int], buffer_s: float = 0.25) -> DeviceBuffer[int]:
    return DeviceBuffer(buffer_s=buffer_s, clock=clock, sleep=clock.sleep, on_overrun=lost.append)


def test_a_device_hands_each_frame_over_when_due_and_a_poll_keeps_it() -> None:
    clock, lost = FakeClock(now=10.0), []
    buffer = _buffer(clock, lost)
    buffer.start((10.0 + 0.1 * k, k) for k in range(3))
    assert buffer.next() == (10.0, 0)
    buffer.hand_over(10.0, deadline=buffer.deadline(0.0), what="camera/cam")  # due now: no wait
    assert clock.sleeps == []
    handed = buffer.next()
    assert handed is not None
    due, frame = handed
    with pytest.raises(TimeoutError, match=r"^camera/cam: next frame due in 0\.100 s"):
        buffer.hand_over(due, deadline=buffer.deadline(0.0), what="camera/cam")
    assert buffer.next() == (due, frame) == (pytest.approx(10.1), 1)  # held by the poll, not lost
    buffer.hand_over(due, deadline=None, what="camera/cam")
    assert clock.now == pytest.approx(10.1)
    assert buffer.next() == (pytest.approx(10.2), 2)
    buffer.hand_over(10.2, deadline=None, what="camera/cam")
    assert buffer.next() is None and not lost  # a finite stream ends


def test_a_reader_that_falls_behind_loses_what_the_buffer_overwrote() -> None:
    clock, lost = FakeClock(now=0.0), []
    buffer = _buffer(clock, lost)
    buffer.start((0.1 * k, k) for k in range(100))
    assert buffer.next() == (0.0, 0)
    buffer.hand_over(0.0, deadline=None, what="lidar/top")
    clock.now = 2.0  # frames 1..17 (due before 1.75 s) are overwritten; 18..20 are held
    assert buffer.next() == (pytest.approx(1.8), 18)
    assert lost == [17] and buffer.overruns == 17


def test_the_buffer_must_hold_some_time() -> None:
    with pytest.raises(ValueError, match="buffer_s must be a positive number of seconds, got 0"):
        DeviceBuffer(buffer_s=0)
    with pytest.raises(RuntimeError, match=r"next\(\) before start\(\)"):
        DeviceBuffer(buffer_s=1.0).next()
