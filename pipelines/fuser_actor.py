"""The fuser's Ray actor: a thin shell around `fusion.fuser.Fuser` and, live, the dispatch books
of `fusion.flow.outbox.FuserOutbox`.

A Ray worker imports the module of the actor class it hosts: this one, like the sensor's, never
loads torch (the inference actor's class is loaded for its handles, and it defers torch).
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from typing import Any

import ray
from ray.exceptions import ActorUnavailableError

from fusion.flow.messages import Collected, LinkReply, check_link_reply
from fusion.flow.outbox import FuserOutbox, SlotCalls
from fusion.fuser import Fuser, FuserStats, PreprocessConfig
from fusion.sample import Frame, FusedSample, Modality
from fusion.sync import SyncConfig
from pipelines.local_link import FrameServer, LinkClient, LinkError
from pipelines.metrics.recorders import FuserMetrics

log = logging.getLogger(__name__)


@ray.remote(concurrency_groups={"collect": 1})  # type: ignore[call-overload]  # untyped in Ray
class FuserActor:
    """One rig's synchronizer and preprocessors.

    Replay: `push(*frame_lists)` takes frames of any of the rig's sensors, in any order, and
    returns the FusedSamples that became ready; `finish()` returns the rest at end of stream.
    Calls run one at a time in the order sent, so the driver may send a push before the
    previous one has answered.

    Live: the rig's sensors call `push_from` themselves as frames are captured (over the local
    link on this node), and a tick goes from here straight to an inference actor of the pool
    given by `set_pool`: over that actor's local link when it is on this node, its prediction
    coming back the same way, else as a Ray call. No frame and no tick passes through the
    driver. The driver keeps flow control and recovery: `collect` (a long poll, on a thread of
    its own) hands it every sample, with its prediction's reference or, for a linked one, the
    prediction itself when it comes; it resubmits samples whose actor died, and sends on, or
    drops when behind, those that found no actor with room.

    On restart the alignment state is gone: the driver fails the run, naming the rig.
    """

    def __init__(
        self,
        *,
        rig: str,
        sensors: dict[str, Modality],
        sync: SyncConfig,
        preprocess: PreprocessConfig,
        lossless: bool,
    ) -> None:
        self.fuser = Fuser(
            rig=rig,
            sensors=sensors,
            sync=sync,
            preprocess=preprocess,
            lossless=lossless,
        )
        self.fuser.warm_up()  # at start-up, not during the first tick
        self.metrics = FuserMetrics(rig=rig)
        self.live = not lossless
        self.pool: list[Any] = []
        # Live: sensors on this node hand frames over on threads of a FrameServer, others as Ray
        # calls on the actor's thread, predictions come back on link threads: one lock keeps the
        # fuser's state whole, and `collect` waits on it for something the driver must see.
        self._lock = threading.Lock()
        self._news = threading.Condition(self._lock)
        self._server: FrameServer | None = None
        self.outbox = FuserOutbox(slots=0, max_in_flight=1)
        # Per pool index: Ray references of predictions this fuser awaits, the local link to the
        # actor (None: Ray calls), and a `listen` call asked after it broke.
        self._links: list[LinkClient | None] = []
        self.awaited = SlotCalls(0)

    def set_pool(
        self, pool: list[Any], max_in_flight: int = 1, links: list[tuple[str, str] | None] | None = None
    ) -> list[str]:
        """The inference actors `push_from` may send to, by index, keeping at most
        `max_in_flight` of its own samples at each; `links` their (node id, socket path) from
        `InferenceActor.listen`. Returns how each is reached: "socket" or "ray". Blocks only
        while it connects to the links."""
        with self._lock:
            for client in self._links:
                if client is not None:
                    client.close()
            n = len(pool)
            self.pool = list(pool)
            self.outbox = FuserOutbox(slots=n, max_in_flight=max_in_flight)
            self.awaited = SlotCalls(n)
            self._links = [None] * n
            for slot, link in enumerate(links or [None] * n):
                self._connect(slot, link)
            return self._transport()

    def _transport(self) -> list[str]:
        return ["ray" if c is None else "socket" for c in self._links]

    def _connect(self, slot: int, link: tuple[str, str] | None) -> None:
        """Open the link to pool[slot] if it listens on this node (lock held)."""
        if link is None or link[0] != ray.get_runtime_context().get_node_id():
            return
        gen = self.outbox.open_link(slot)
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
            self.outbox.reply(slot, gen, message)
            self._wake()

    def _on_link_closed(self, slot: int, gen: int, reason: str) -> None:
        with self._lock:
            if self.outbox.current(slot, gen):
                self._link_broken(slot, reason)

    def _link_broken(self, slot: int, reason: str) -> None:
        """The link to pool[slot] is gone (its actor died, most likely): the samples it held go
        back to the driver to resubmit, Ray calls take over, and the restarted actor is asked to
        listen again (lock held)."""
        client, self._links[slot] = self._links[slot], None
        lost = self.outbox.link_lost(slot)
        if client is not None:
            client.close()
        log.warning(
            "rig %s: %s; %d sample(s) back to the driver, Ray calls until the actor listens again",
            self.fuser.rig,
            reason,
            len(lost),
        )
        self.awaited.relink(slot, self.pool[slot].listen.remote())
        self._wake()

    def _wake(self) -> None:
        if self.outbox.wake:
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
        goes to the outbox for `collect`. Blocks only while a linked actor's socket is full."""
        with self._lock:
            samples = self.fuser.push(frames)
            self.metrics.record(self.fuser)
            for sample in samples:
                self._dispatch(sample)
            self._wake()

    def _dispatch(self, sample: FusedSample) -> None:
        slot = self._free_slot()
        if slot is None:
            self.outbox.queued(sample)
            return
        sample.stage_times["dispatched"] = time.time()
        client = self._links[slot]
        if client is None:
            ref = self.pool[slot].infer.remote(sample)
            self.awaited.called(slot, ref)
            self.outbox.called(sample, slot, ref)
            return
        self.outbox.linked(sample, slot)
        try:
            client.send(sample)
        except LinkError as err:
            self._link_broken(slot, str(err))

    def _free_slot(self) -> int | None:
        """The pool index with the fewest of this fuser's samples, if it has room (lock held);
        on the way, forget answered Ray calls and use the links of actors listening again."""
        for slot, asked in self.awaited.settle(_answered):
            link = None
            try:
                link = ray.get(asked)
            except ActorUnavailableError:  # asked before Ray knew it died: ask the restarted one
                self.awaited.relink(slot, self.pool[slot].listen.remote())
            except Exception as err:  # gone for good: Ray calls fail too, and the driver says so
                log.debug("rig %s: inference actor %d does not listen again: %s", self.fuser.rig, slot, err)
            self._connect(slot, link)
        return self.outbox.free_slot(self.awaited.unanswered())

    @ray.method(concurrency_group="collect")  # type: ignore[misc]  # ray.method is untyped
    def collect(self, wait_s: float = 0.0) -> list[Collected]:
        """Live: the outbox, oldest first, emptied (`fusion.flow.messages.Collected`). Blocks up
        to `wait_s` for something the driver must act on: a sample that is not linked, a
        prediction, a loss; returns at once when there is one. Runs beside `push_from`."""
        with self._news:
            if not self.outbox.wake and wait_s > 0:
                self._news.wait_for(lambda: self.outbox.wake, timeout=wait_s)
            return self.outbox.take()

    def push(self, *frame_lists: list[Frame]) -> list[FusedSample]:
        """Replay: fuse the frames (lists of them, as sensors' reads gave them); the samples ready."""
        samples = self.fuser.push([f for frames in frame_lists for f in frames])
        self.metrics.record(self.fuser)
        return samples

    def finish(self) -> list[FusedSample]:
        """Replay: every stream ended; the samples still held."""
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
                    self.outbox.retire(slot)
                    client.close()
                    self._links[slot] = None

    def stats(self) -> FuserStats:
        """What the alignment used, dropped (and why) and left incomplete; live, how this fuser
        reaches each inference actor now."""
        with self._lock:
            stats = self.fuser.stats()
            transport = tuple(self._transport()) if self.live and self.pool else ()
        errors = tuple(self._server.errors) if self._server is not None else ()
        return dataclasses.replace(stats, inference_transport=transport, link_errors=errors)


def _answered(refs: list[Any]) -> list[Any]:
    """The references among `refs` already answered; never blocks."""
    done, _ = ray.wait(refs, num_returns=len(refs), timeout=0)
    return list(done)
