"""A sensor's paced, resumable reads (`SourceReader`), without Ray, on a fake clock."""

from __future__ import annotations

import numpy as np
import pytest

from fusion.clock import Pacer
from fusion.flow.reader import SensorNotStarted, SourceReader
from fusion.sample import Frame, Modality
from fusion.sensors import EndOfStream
from tests.fakes import FakeClock


class ListSource:
    """A finite source of frames stamped `times` (s); `gap_at`: a read there times out once."""

    def __init__(self, times: list[float], gap_at: int | None = None) -> None:
        self.times, self.gap_at, self.next, self.opened = times, gap_at, 0, 0

    def open(self) -> None:
        self.opened += 1
        self.next = 0

    def read(self, timeout: float | None = None) -> Frame:
        if self.next == self.gap_at:
            self.gap_at = None
            raise TimeoutError
        if self.next >= len(self.times):
            raise EndOfStream
        t = self.times[self.next]
        self.next += 1
        return Frame(
            modality=Modality.LIDAR,
            sensor_id="l",
            timestamp=t,
            wall_time=t,
            data=np.zeros((1, 4), np.float32),
        )


def reader(times, speed=None, **kw):
    clock = FakeClock()
    pacer = Pacer(speed, clock=clock, sleep=clock.sleep)
    return SourceReader(
        ListSource(times, **kw), pacer, name="rigs[r].sensors.l.source", sleep=clock.sleep, clock=clock
    ), clock


def stamps(frames):
    return [f.timestamp for f in frames]


def test_a_read_before_start_names_the_sensor():
    r, _ = reader([0.0])
    with pytest.raises(SensorNotStarted, match=r"rigs\[r\].sensors.l.source: read before start"):
        r.read(4, 0.1)


def test_unpaced_reads_take_up_to_max_frames_then_end_with_none():
    r, clock = reader([0.0, 0.1, 0.2])
    r.start()
    assert stamps(r.read(2, 0.1)) == [0.0, 0.1]
    assert stamps(r.read(2, 0.1)) == [0.2]
    assert r.read(2, 0.1) is None and r.ended
    assert r.delivered == 3 and r.newest == 0.2 and clock.sleeps == []


def test_paced_reads_hold_a_frame_not_due_and_hand_it_out_next():
    r, clock = reader([0.0, 0.5, 0.6], speed=1.0)
    r.start()
    assert stamps(r.read(4, 0.1)) == [0.0]  # 0.5 is not due within this read: held
    assert clock.sleeps == []  # it had something: no waiting for the rest
    assert stamps(r.read(4, 1.0)) == [0.5]  # slept until it was due, 0.6 not yet
    assert clock.sleeps == pytest.approx([0.5])
    assert stamps(r.read(4, 1.0)) == [0.6]


def test_a_read_with_nothing_due_waits_out_its_timeout():
    r, clock = reader([0.0, 5.0], speed=1.0)
    r.start()
    r.read(4, 0.1)
    assert r.read(4, 0.2) == []
    assert clock.sleeps == pytest.approx([0.2])


def test_a_timeout_from_the_source_is_an_empty_read_not_the_end():
    r, _ = reader([0.0, 0.1], gap_at=0)
    r.start()
    assert r.read(4, 0.1) == [] and not r.ended
    assert stamps(r.read(4, 0.1)) == [0.0, 0.1]


def test_start_resumes_after_the_frames_already_delivered():
    r, _ = reader([0.0, 0.1, 0.2, 0.3])
    r.start()
    r.read(2, 0.1)
    assert r.start(resume_from=r.delivered) == 2  # the restarted actor reopens, skipping two
    assert stamps(r.read(4, 0.1)) == [0.2, 0.3]
    assert r.delivered == 4
