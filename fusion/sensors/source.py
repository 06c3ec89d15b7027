"""The sensor interface: one `Source` per sensor kind and backend (see `fusion.sensors.registry`).

Contract, for every source:

- `open()` connects to the device or file. A missing file or device fails here, at once,
  with a `SourceError` naming the path, index or address.
- `read(timeout)` returns the next frame. Finite sources (files, recordings, the simulator)
  never block on a clock and raise `EndOfStream` after the last frame; live sources block up to
  `timeout` seconds (None: forever) and raise `TimeoutError` when nothing arrived.
- `read_latest(max_age)` never blocks: the newest frame not older than `max_age` seconds
  (by the capture clock), or None. Older unread frames are dropped and counted.
- `close()` releases the device; sources are context managers.
- Bad input never ends a stream: a corrupt frame, packet or file is skipped, counted in
  `stats.errors[reason]`, and logged once per reason with what was wrong.

One `Source` class per backend: its `backend` (a `Backend`, declared in the backend's light
config module and registered there with `fusion.sensors.registry.register_backend`) names the
modalities it serves and each one's config class; configs pick it by backend name, no if/elif
dispatch anywhere.
"""

from __future__ import annotations

import logging
import threading
import time
from abc import ABC, abstractmethod
from collections import Counter, deque
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import ClassVar

from fusion.config import StrictModel
from fusion.errors import InputError, SourceError
from fusion.sample import Frame, Modality

log = logging.getLogger(__name__)


class EndOfStream(Exception):
    """A finite source has delivered its last frame."""


class SourceConfig(StrictModel):
    """Fields every source has; each backend's config adds its own."""

    backend: str
    sensor_id: str = ""  # default: the modality name


@dataclass(frozen=True, eq=False)
class Backend:
    """One source class serving a backend name, declared where its configs are (a light module).

    `name` is what configs write as `backend:`; `configs` the modalities the class serves, each
    with its config class; `source` the class as "package.module:Class", imported only when a
    source is built, so that naming or validating a backend loads none of its libraries. Two
    classes may serve one name for different modalities (`device`: OpenCV camera, PortAudio
    microphone), each with its own `Backend`.
    """

    name: str
    configs: Mapping[Modality, type[SourceConfig]]
    source: str

    def modality_of(self, config: SourceConfig, modality: Modality | None) -> Modality:
        """The modality a source of this backend reads: `modality`, or when None the one whose
        config class `config` is. Raises InputError when the backend does not serve `modality`
        or `config` is not its config, TypeError when None leaves more than one."""
        if modality is None:
            exact = [m for m, cls in self.configs.items() if type(config) is cls]
            if len(exact) != 1:
                served = ", ".join(m.value for m in self.configs)
                raise TypeError(f"{self.name} source: give the modality (it serves {served})")
            (modality,) = exact
        if modality not in self.configs:
            served = ", ".join(m.value for m in self.configs) or "none"
            raise InputError(f"the {self.name} backend serves no {modality.value} here (serves: {served})")
        expected = self.configs[modality]
        if not isinstance(config, expected):
            raise InputError(
                f"a {type(config).__name__} is not a {modality.value}/{self.name} config "
                f"(expected {expected.__name__})"
            )
        return modality


@dataclass
class SourceStats:
    """What a source delivered and what it had to skip, by reason."""

    frames: int = 0
    errors: Counter[str] = field(default_factory=Counter)  # bad input skipped
    dropped: Counter[str] = field(default_factory=Counter)  # good frames not delivered
    reconnects: int = 0


class Source(ABC):
    """Base of all sources. A subclass sets `backend`: what it serves, and with which configs."""

    backend: ClassVar[Backend]

    def __init__(self, config: SourceConfig, *, modality: Modality | None = None) -> None:
        """`modality`: the one this source reads; None: the one `config`'s class is for (a
        backend with one config class for several modalities, like `recording`, needs it)."""
        self.modality = self.backend.modality_of(config, modality)
        self.config = config
        self.sensor_id = config.sensor_id or self.modality.value
        self.stats = SourceStats()
        self._logged: set[str] = set()

    @abstractmethod
    def open(self) -> None: ...

    @abstractmethod
    def read(self, timeout: float | None = None) -> Frame: ...

    def read_latest(self, max_age: float) -> Frame | None:
        """The newest frame no older than `max_age` s; finite sources return their next frame."""
        try:
            return self.read(timeout=0)
        except (TimeoutError, EndOfStream):
            return None

    @abstractmethod
    def close(self) -> None: ...

    def skip(self, reason: str, detail: str) -> None:
        """Count a bad input under `reason` (a small fixed word) and log the first of each reason."""
        self.stats.errors[reason] += 1
        if reason not in self._logged:
            self._logged.add(reason)
            log.warning(
                "%s/%s skipped %s: %s (further ones counted, not logged)",
                self.modality.value,
                self.sensor_id,
                reason,
                detail,
            )

    def __enter__(self) -> Source:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __iter__(self) -> Iterator[Frame]:
        """Frames until the end of a finite source (live sources iterate until closed)."""
        while True:
            try:
                yield self.read()
            except EndOfStream:
                return


class LiveSource(Source):
    """A device read by a background thread into a bounded queue and a latest-frame slot.

    Subclasses implement `_connect`, `_capture` (blocks until the device gives a frame or
    raises) and `_disconnect`. A device error reconnects with exponential back-off
    (0.1 s doubling to 5 s), counted in `stats.reconnects`; the stream goes on.
    """

    queue_size: ClassVar[int] = 8

    def __init__(self, config: SourceConfig, *, modality: Modality | None = None) -> None:
        super().__init__(config, modality=modality)
        self._queue: deque[Frame] = deque()
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    @abstractmethod
    def _connect(self) -> None:
        """Open the device; raise SourceError naming it when it is not there."""

    @abstractmethod
    def _capture(self) -> Frame | None:
        """Block until the next frame; None when input was skipped; raise OSError/SourceError on device loss."""

    @abstractmethod
    def _disconnect(self) -> None: ...

    def open(self) -> None:
        self._connect()  # the first connection fails fast, naming the device
        self._stop.clear()
        self._thread = threading.Thread(
            target=self._run, name=f"{self.modality.value}-{self.sensor_id}", daemon=True
        )
        self._thread.start()

    def _run(self) -> None:
        backoff, connected = 0.1, True
        while not self._stop.is_set():
            if not connected:
                connected = self._reconnect(backoff)
                backoff = 0.1 if connected else min(backoff * 2, 5.0)
                continue
            try:
                frame = self._capture()
            except (OSError, SourceError) as err:
                if self._stop.is_set():
                    return
                self.skip("device_lost", str(err))
                self._disconnect_quietly()
                connected = False
                continue
            if frame is not None:
                self._push(frame)

    def _disconnect_quietly(self) -> None:
        try:
            self._disconnect()
        except Exception as err:  # the device is already gone; closing it may fail too
            log.debug("disconnect after loss failed: %s", err)

    def _reconnect(self, delay: float) -> bool:
        """After `delay` s, try the device again; True when it is back."""
        if self._stop.wait(delay):
            return False
        try:
            self._connect()
        except (OSError, SourceError) as err:
            self.skip("reconnect_failed", str(err))
            return False
        self.stats.reconnects += 1
        return True

    def _push(self, frame: Frame) -> None:
        with self._cond:
            if len(self._queue) >= self.queue_size:
                self._queue.popleft()
                self.stats.dropped["queue_full"] += 1
            self._queue.append(frame)
            self.stats.frames += 1
            self._cond.notify_all()

    def read(self, timeout: float | None = None) -> Frame:
        """The oldest unread frame; blocks up to `timeout` s, then raises TimeoutError."""
        with self._cond:
            if not self._cond.wait_for(lambda: bool(self._queue), timeout=timeout):
                raise TimeoutError(f"{self.modality.value}/{self.sensor_id}: no frame within {timeout} s")
            return self._queue.popleft()

    def read_latest(self, max_age: float) -> Frame | None:
        """Never blocks: the newest frame if captured within `max_age` s; older unread ones are dropped."""
        with self._cond:
            if not self._queue:
                return None
            newest = self._queue.pop()
            self.stats.dropped["superseded"] += len(self._queue)
            self._queue.clear()
        if self.clock() - newest.timestamp > max_age:
            self.stats.dropped["too_old"] += 1
            return None
        return newest

    def clock(self) -> float:
        """The clock `Frame.timestamp` uses for this source (monotonic by default)."""
        return time.monotonic()

    def close(self) -> None:
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        try:
            self._disconnect()
        finally:
            if self._thread is not None:
                self._thread.join(timeout=5)
                self._thread = None
