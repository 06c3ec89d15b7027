"""Ray actors of the sensor side: thin shells around the plain classes in `fusion/`.

Each actor's contract is written on it; the logic it wraps is tested without Ray. The model's
actor is in `pipelines.inference_actor`: a Ray worker imports the module of the actor class it
hosts, so sensor and fuser processes never load torch (seconds of start-up and hundreds of MB
each).
"""

from __future__ import annotations

import logging
import math
import threading
import time
from typing import Any

import ray
from ray.exceptions import ActorUnavailableError

from fusion.flow.messages import (
    Collected,
    Dispatched,
    Failed,
    InferFailed,
    Inferred,
    Linked,
    LinkReply,
    Lost,
    Predicted,
    Queued,
    StreamState,
    Taken,
    check_link_reply,
)
from fusion.fuser import Fuser, PreprocessConfig
from fusion.sample import Frame, FusedSample, Modality
from fusion.sensors import EndOfStream, Source, SourceConfig, make_source
from fusion.sync import SyncConfig
from pipelines.local_link import FrameClient, FrameServer, LinkClient, LinkError
from pipelines.metrics import FuserMetrics, SourceMetrics

log = logging.getLogger(__name__)


class SensorNotStarted(RuntimeError):
    """A (restarted) sensor actor was asked for frames before `start`."""


class Pacer:
    """Replay pacing: frame timestamps mapped onto the wall clock at `speed` (None: no waiting)."""

    def __init__(self, speed: float | None) -> None:
        self.speed = speed
        self._anchor: tuple[float, float] | None = None  # (first frame time, monotonic at it)

    def delay(self, timestamp: float) -> float:
        """Seconds until a frame stamped `timestamp` is due (<= 0: now); the first one anchors."""
        if self.speed is None:
            return 0.0
        if self._anchor is None:
            self._anchor = (timestamp, time.monotonic())
        return self._anchor[1] + (timestamp - self._anchor[0]) / self.speed - time.monotonic()


@ray.remote
class SensorActor:
    """One sensor's source.

    `read(max_frames, timeout_s)` returns up to `max_frames` frames in capture order: `[]` when a
    live source gave nothing within `timeout_s`, `None` once a finite source has ended. Replay
    sources are paced by `speed`. After a restart, `start(resume_from=k)` skips the k frames
    already delivered, so a replay continues exactly where it stopped.
    """

    def __init__(
        self, *, rig: str, modality: str, source: SourceConfig, name: str, speed: float | None
    ) -> None:
        self.name = name
        self.source: Source = make_source(modality, source, source=name)
        self.metrics = SourceMetrics(rig=rig, modality=modality)
        self.pacer = Pacer(speed)
        self.delivered = 0
        self.ended = False
        self.started = False
        self._held: Frame | None = None  # read from the source, not due yet (paced replay)
        # Live: the thread that reads the device and hands frames to the fuser (`stream_to`).
        self._streamer: threading.Thread | None = None
        self._stop_stream = threading.Event()
        self.stream_error: str | None = None
        self.enabled = True  # switched off: frames are read (the device never backs up) and dropped
        self.newest = -math.inf  # timestamp of the newest frame read
        self.discarded = 0

    def start(self, resume_from: int = 0) -> int:
        """Open the source (fails naming the file or device); returns frames skipped to resume."""
        self.source.open()
        for _ in range(resume_from):
            try:
                self.source.read(timeout=None)
            except EndOfStream:
                break
        self.delivered = resume_from
        self._held = None
        self.started = True
        return resume_from

    def read(self, max_frames: int, timeout_s: float, *, record: bool = True) -> list[Frame] | None:
        """Waits up to `timeout_s` for the first frame, then takes only those already due.

        It returns as soon as it has something: a frame never waits in the actor for the
        ones after it, so live latency gains nothing from this call but its Ray round trip.
        `record: False` leaves the metrics to the caller (the stream records after the hand-over).
        """
        if not self.started:
            raise SensorNotStarted(f"{self.name}: read before start (the actor was restarted)")
        if self.ended:
            return None
        frames: list[Frame] = []
        deadline = time.monotonic() + timeout_s
        while len(frames) < max_frames:
            frame = self._held
            self._held = None
            if frame is None:
                try:
                    frame = self.source.read(
                        timeout=max(0.0, deadline - time.monotonic()) if not frames else 0.0
                    )
                except TimeoutError:
                    break
                except EndOfStream:
                    self.ended = True
                    break
            delay = self.pacer.delay(frame.timestamp)
            if delay > 0 and (frames or delay > deadline - time.monotonic()):
                self._held = frame  # paced replay: not due yet, it opens the next read
                if not frames:
                    time.sleep(max(0.0, deadline - time.monotonic()))
                break
            if delay > 0:
                time.sleep(delay)
            frames.append(frame)
        self.delivered += len(frames)
        if frames:
            self.newest = frames[-1].timestamp
        if record:
            self.metrics.record(len(frames), self.source.stats)
        if not frames and self.ended:
            return None
        return frames

    @ray.method(num_returns=2)  # type: ignore[misc]  # ray.method is untyped
    def take(self, max_frames: int, timeout_s: float) -> tuple[Taken | None, list[Frame]]:
        """`read` split for the driver: `Taken` (how many frames, the newest one's timestamp), or
        None once the source has ended, and the frames. The driver waits on the first and hands the
        second to the fuser by reference, so frames go from the sensor to its fuser (on a
        cluster, within the rig's node) without passing through the driver."""
        frames = self.read(max_frames, timeout_s)
        if frames is None:
            return None, []
        return Taken(count=len(frames), newest=frames[-1].timestamp if frames else -math.inf), frames

    def stream_to(
        self, fuser: Any, max_frames: int, max_pushes: int, link: tuple[str, str] | None = None
    ) -> str:
        """Live: from now on a thread of this actor reads the device and hands every frame to
        `fuser.push_from` as soon as it is captured: one Ray hop from the device to its fuser,
        with no round trip through the driver per read. At most `max_pushes` hand-overs are in
        flight; past that the thread waits, and the device's own buffer takes the backlog
        (and counts what it overwrites), so a stalled fuser never makes the sensor block.

        `link` is the fuser's (node id, socket path) from `FuserActor.listen`: on the same node
        frames go over that socket (`pipelines.local_link`) instead of as Ray calls, which cost
        far more here than the frames' bytes. Returns how frames travel: "socket" or "ray"."""
        if not self.started:
            raise SensorNotStarted(f"{self.name}: stream_to before start (the actor was restarted)")
        self.stop_stream()
        self._stop_stream.clear()
        self.stream_error = None
        client = None
        if link is not None and link[0] == ray.get_runtime_context().get_node_id():
            try:
                client = FrameClient(link[1])
            except LinkError as err:  # Ray calls still work
                self.stream_error = f"{err}; frames go as Ray calls"
        self._streamer = threading.Thread(
            target=self._stream,
            args=(fuser, client, max_frames, max_pushes),
            name=f"stream-{self.name}",
            daemon=True,
        )
        self._streamer.start()
        return "ray" if client is None else "socket"

    def _stream(self, fuser: Any, client: FrameClient | None, max_frames: int, max_pushes: int) -> None:
        in_flight: list[Any] = []
        try:
            while not self._stop_stream.is_set():
                frames = self.read(max_frames, 0.05, record=False)
                if not frames:
                    self.metrics.record(0, self.source.stats)
                    if frames is None:
                        return  # a finite source ended
                    continue
                if not self.enabled:
                    self.discarded += len(frames)
                    self.source.stats.dropped["sensor_off"] += len(frames)
                elif client is not None:
                    client.send(frames)  # blocks while the fuser is behind: the device buffer overruns
                else:
                    in_flight.append(fuser.push_from.remote(frames))
                    _, in_flight = ray.wait(in_flight, num_returns=len(in_flight), timeout=0)
                    if len(in_flight) >= max_pushes:
                        _, in_flight = ray.wait(in_flight, num_returns=len(in_flight) - max_pushes + 1)
                self.metrics.record(len(frames), self.source.stats)  # after the hand-over, off its path
        except Exception as err:  # reported by `stream_state`; the driver restarts the stream
            self.stream_error = f"{type(err).__name__}: {err}"
        finally:
            if client is not None:
                client.close()

    def stream_state(self) -> StreamState:
        """Live: whether the stream runs, why it stopped, and what this sensor delivered and discarded."""
        return StreamState(
            streaming=self._streamer is not None and self._streamer.is_alive(),
            error=self.stream_error,
            ended=self.ended,
            delivered=self.delivered,
            discarded=self.discarded,
            newest=self.newest,
        )

    def set_enabled(self, enabled: bool) -> None:
        self.enabled = enabled

    def stop_stream(self) -> None:
        self._stop_stream.set()
        if self._streamer is not None:
            self._streamer.join(timeout=5.0)
            self._streamer = None

    def stats(self) -> dict[str, Any]:
        s = self.source.stats
        return {
            "frames": s.frames,
            "errors": dict(s.errors),
            "dropped": dict(s.dropped),
            "reconnects": s.reconnects,
            "delivered": self.delivered,
        }

    def close(self) -> None:
        self.stop_stream()
        self.source.close()

    def node_id(self) -> str:
        return ray.get_runtime_context().get_node_id()


@ray.remote(concurrency_groups={"collect": 1})  # type: ignore[call-overload]  # untyped in Ray
class FuserActor:
    """One rig's synchronizer and preprocessors.

    Replay: `push(frames)` takes frames of any of the rig's sensors, in any order, and returns
    the FusedSamples that became ready; `finish()` returns the rest at end of stream.

    Live: the rig's sensors call `push_from` themselves as frames are captured (over the local
    link on this node), and a tick goes from here straight to an inference actor of the pool
    given by `set_pool`: over that actor's local link when it is on this node, its prediction
    coming back the same way, else as a Ray call. No frame and no tick passes through the
    driver. The driver keeps flow control and recovery: `collect` (a long poll, on a thread of
    its own) hands it every sample, with its prediction's reference or, for a linked one, the
    prediction itself when it comes; it resubmits samples whose actor died, and sends on, or
    drops when behind, those that found no actor with room.
    """

    def __init__(
        self,
        *,
        rig: str,
        sensors: dict[str, str],
        sync: SyncConfig,
        preprocess: PreprocessConfig,
        lossless: bool,
    ) -> None:
        self.fuser = Fuser(
            rig=rig,
            sensors={k: Modality(v) for k, v in sensors.items()},
            sync=sync,
            preprocess=preprocess,
            lossless=lossless,
        )
        self.fuser.warm_up()  # at start-up, not during the first tick
        self.metrics = FuserMetrics(rig=rig)
        self.live = not lossless
        self.pool: list[Any] = []
        self.max_in_flight = 1
        # Live: sensors on this node hand frames over on threads of a FrameServer, others as Ray
        # calls on the actor's thread, predictions come back on link threads: one lock keeps the
        # fuser's state whole, and `collect` waits on it for something the driver must see.
        self._lock = threading.Lock()
        self._news = threading.Condition(self._lock)
        self._wake = False  # the outbox holds something the driver should see now
        self._server: FrameServer | None = None
        # Per pool index: Ray references of predictions this fuser awaits; the local link to the
        # actor (None: Ray calls), its generation (callbacks of a replaced link are ignored), the
        # samples sent over it awaiting their prediction, and a `listen` call after it broke.
        self._dispatched: list[list[Any]] = []
        self._links: list[LinkClient | None] = []
        self._link_gen: list[int] = []
        self._linked: list[dict[int, FusedSample]] = []
        self._relink: list[Any] = []
        self._outbox: list[Collected] = []

    def set_pool(
        self, pool: list[Any], max_in_flight: int = 1, links: list[tuple[str, str] | None] | None = None
    ) -> list[str]:
        """The inference actors `push_from` may send to, by index, keeping at most
        `max_in_flight` of its own samples at each; `links` their (node id, socket path) from
        `InferenceActor.listen`. Returns how each is reached: "socket" or "ray"."""
        with self._lock:
            for client in self._links:
                if client is not None:
                    client.close()
            n = len(pool)
            self.pool = list(pool)
            self.max_in_flight = max_in_flight
            self._dispatched = [[] for _ in range(n)]
            self._links = [None] * n
            self._link_gen = [0] * n
            self._linked = [{} for _ in range(n)]
            self._relink = [None] * n
            for slot, link in enumerate(links or [None] * n):
                self._connect(slot, link)
            return ["ray" if c is None else "socket" for c in self._links]

    def _connect(self, slot: int, link: tuple[str, str] | None) -> None:
        """Open the link to pool[slot] if it listens on this node (lock held)."""
        if link is None or link[0] != ray.get_runtime_context().get_node_id():
            return
        gen = self._link_gen[slot] = self._link_gen[slot] + 1
        try:
            self._links[slot] = LinkClient(
                link[1],
                peer=f"inference actor {slot}",
                on_reply=lambda message: self._on_reply(slot, gen, message),
                on_closed=lambda reason: self._on_link_closed(slot, gen, reason),
                check=check_link_reply,
            )
        except LinkError as err:
            log.warning("rig %s: %s; samples go as Ray calls", self.fuser.rig, err)

    def _on_reply(self, slot: int, gen: int, message: LinkReply) -> None:
        with self._lock:
            sample = self._linked[slot].pop(message.seq, None) if gen == self._link_gen[slot] else None
            if sample is None:
                return  # given back to the driver when an earlier link broke
            match message:
                case Inferred(prediction=prediction):
                    self._outbox.append(Predicted(prediction=prediction, slot=slot))
                case InferFailed(why=why):
                    self._outbox.append(Failed(sample=sample, slot=slot, why=why))
            self._notify()

    def _on_link_closed(self, slot: int, gen: int, reason: str) -> None:
        with self._lock:
            if gen == self._link_gen[slot]:
                self._link_broken(slot, reason)

    def _link_broken(self, slot: int, reason: str) -> None:
        """The link to pool[slot] is gone (its actor died, most likely): the samples it held go
        back to the driver to resubmit, Ray calls take over, and the restarted actor is asked to
        listen again (lock held)."""
        client, self._links[slot] = self._links[slot], None
        self._link_gen[slot] += 1
        if client is not None:
            client.close()
        lost = [self._linked[slot][seq] for seq in sorted(self._linked[slot])]
        self._linked[slot] = {}
        self._outbox.extend(Lost(sample=sample, slot=slot) for sample in lost)
        log.warning(
            "rig %s: %s; %d sample(s) back to the driver, Ray calls until the actor listens again",
            self.fuser.rig,
            reason,
            len(lost),
        )
        self._relink[slot] = self.pool[slot].listen.remote()
        self._notify()

    def _notify(self) -> None:
        self._wake = True
        self._news.notify_all()

    def listen(self) -> tuple[str, str]:
        """Live: open the local link for sensors on this node; returns (node id, socket path)."""
        if self._server is None:
            self._server = FrameServer(self.push_from, name=f"fuser-{self.fuser.rig}")
        return ray.get_runtime_context().get_node_id(), self._server.path

    def push_from(self, frames: list[Frame]) -> None:
        """Live: a sensor's frames, straight from its actor (a Ray call, or its local link). A
        tick they complete goes on at once to the least busy inference actor with room (at most
        `max_in_flight` of this fuser's samples each), else waits for the driver; either way it
        goes to the outbox for `collect`."""
        with self._lock:
            self._fuse(frames)

    def _fuse(self, frames: list[Frame]) -> None:
        samples = self.fuser.push(frames)
        self.metrics.record(self.fuser)
        for sample in samples:
            slot = self._free_slot()
            if slot is None:
                self._outbox.append(Queued(sample=sample))
                self._notify()
                continue
            sample.stage_times["dispatched"] = time.time()
            client = self._links[slot]
            if client is not None:
                self._linked[slot][sample.seq] = sample
                self._outbox.append(Linked(sample=sample, slot=slot))  # its prediction wakes the driver
                try:
                    client.send(sample)
                except LinkError as err:
                    self._link_broken(slot, str(err))
                continue
            ref = self.pool[slot].infer.remote(sample)
            self._dispatched[slot].append(ref)
            self._outbox.append(Dispatched(sample=sample, slot=slot, ref=ref))
            self._notify()

    def _free_slot(self) -> int | None:
        """The pool index with the fewest of this fuser's samples, if it has room (lock held)."""
        for i, refs in enumerate(self._dispatched):
            if refs:
                _, self._dispatched[i] = ray.wait(refs, num_returns=len(refs), timeout=0)
            if self._relink[i] is not None and ray.wait([self._relink[i]], timeout=0)[0]:
                asked, self._relink[i] = self._relink[i], None
                link = None
                try:
                    link = ray.get(asked)
                except ActorUnavailableError:  # asked before Ray knew it died: ask the restarted one
                    self._relink[i] = self.pool[i].listen.remote()
                except Exception as err:  # gone for good: Ray calls fail too, and the driver says so
                    log.debug("rig %s: inference actor %d does not listen again: %s", self.fuser.rig, i, err)
                self._connect(i, link)
        if not self._dispatched:
            return None
        busy = [len(refs) + len(linked) for refs, linked in zip(self._dispatched, self._linked, strict=True)]
        i = min(range(len(busy)), key=busy.__getitem__)
        return i if busy[i] < self.max_in_flight else None

    @ray.method(concurrency_group="collect")  # type: ignore[misc]  # ray.method is untyped
    def collect(self, wait_s: float = 0.0) -> list[Collected]:
        """Live: the outbox, oldest first, emptied (`fusion.flow.messages.Collected`). Waits up to `wait_s` for
        something the driver must act on: a sample that is not linked, a prediction, a loss."""
        with self._news:
            if not self._wake and wait_s > 0:
                self._news.wait_for(lambda: self._wake, timeout=wait_s)
            out, self._outbox, self._wake = self._outbox, [], False
        return out

    def push(self, *frame_lists: list[Frame]) -> list[FusedSample]:
        """Replay: fuse the frames (lists of them, as sensors' reads gave them); the samples ready."""
        samples = self.fuser.push([f for frames in frame_lists for f in frames])
        self.metrics.record(self.fuser)
        return samples

    def finish(self) -> list[FusedSample]:
        samples = self.fuser.finish()
        self.metrics.record(self.fuser)
        return samples

    def close(self) -> None:
        """Close the local links (the sensors' socket directory goes with it)."""
        if self._server is not None:
            self._server.close()
            self._server = None
        with self._lock:
            for slot, client in enumerate(self._links):
                if client is not None:
                    self._link_gen[slot] += 1
                    client.close()
                    self._links[slot] = None

    def stats(self) -> dict[str, Any]:
        with self._lock:
            out = self.fuser.stats_dict()
            if self.live and self.pool:  # how this fuser reaches each inference actor now
                out["inference_transport"] = ["ray" if c is None else "socket" for c in self._links]
        if self._server is not None and self._server.errors:
            out["link_errors"] = list(self._server.errors)
        return out
