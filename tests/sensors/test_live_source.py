"""LiveSource's capture thread, bounded queue and reconnects, with a device faked at `_capture`."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from fusion.sample import Frame, Modality
from fusion.sensors.source import Backend, LiveSource, SourceConfig


class GatedDevice(LiveSource):
    """A camera that gives one frame per `release()`; `fail_next` makes the next capture lose the device."""

    backend = Backend("gated-test", {Modality.CAMERA: SourceConfig}, f"{__name__}:GatedDevice")

    def __init__(self) -> None:
        super().__init__(SourceConfig(backend="gated-test", sensor_id="cam"))
        self._permits = threading.Semaphore(0)
        self.count = 0
        self.fail_next = False
        self.connects = 0

    def release(self, n: int) -> None:
        for _ in range(n):
            self._permits.release()

    def _connect(self) -> None:
        self.connects += 1

    def _capture(self) -> Frame | None:
        while not self._permits.acquire(timeout=0.05):
            if self._stop.is_set():
                raise OSError("stopped")
        if self.fail_next:
            self.fail_next = False
            raise OSError("cable pulled")
        image = np.full((4, 4, 3), self.count, np.uint8)
        self.count += 1
        return Frame(Modality.CAMERA, "cam", time.monotonic(), time.time(), image, index=self.count - 1)

    def _disconnect(self) -> None:
        pass


def wait_until(cond, timeout: float = 5.0) -> None:
    end = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < end, "condition not met in time"
        time.sleep(0.01)


def test_a_full_queue_drops_the_oldest_and_counts_it() -> None:
    dev = GatedDevice()
    with dev:
        dev.release(dev.queue_size + 3)
        wait_until(lambda: dev.stats.frames == dev.queue_size + 3)
        got = [dev.read(timeout=1).index for _ in range(dev.queue_size)]
        assert got == list(range(3, dev.queue_size + 3))
        assert dev.stats.dropped["queue_full"] == 3
        with pytest.raises(TimeoutError, match="camera/cam"):
            dev.read(timeout=0.05)


def test_device_loss_reconnects_and_the_stream_goes_on() -> None:
    dev = GatedDevice()
    with dev:
        dev.release(2)
        assert [dev.read(timeout=1).index for _ in range(2)] == [0, 1]
        dev.fail_next = True
        dev.release(2)  # the first is lost with the device, the second comes after the reconnect
        assert dev.read(timeout=2).index == 2
        assert dev.stats.errors["device_lost"] == 1 and dev.stats.reconnects == 1 and dev.connects == 2
