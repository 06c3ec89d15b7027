"""A live fuser's side of dispatch: which inference actor gets a fused sample, what each holds,
and the outbox the driver empties with `FuserActor.collect`.

The fuser sends a tick itself when an inference actor has room (at most `max_in_flight` of this
fuser's samples each) and tells the driver everything it did, in order, as `Collected`
messages: the driver keeps the accounting, resubmits what a dead actor held, and sends on (or
drops) what found no room. Calls are the actor's business; this class only keeps the books.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

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
)
from fusion.sample import FusedSample


class FuserOutbox:
    """The books of one fuser's dispatch to an inference pool of `slots` actors.

    A local link to an actor has a generation: `open_link` starts a new one, and replies or
    closings of an older link are ignored, since what it held was already given back.
    Not thread-safe: the actor calls it under its lock.
    """

    def __init__(self, *, slots: int, max_in_flight: int) -> None:
        self.max_in_flight = max_in_flight
        self.wake = False  # the outbox holds something the driver must act on now
        self._items: list[Collected] = []
        self._linked: list[dict[int, FusedSample]] = [{} for _ in range(slots)]  # by seq
        self._generation = [0] * slots

    @property
    def slots(self) -> int:
        return len(self._linked)

    def free_slot(self, calls: Sequence[int]) -> int | None:
        """The actor holding the fewest of this fuser's samples, if it has room; `calls` are
        the Ray calls still unanswered at each (the caller knows which have finished)."""
        if not self._linked:
            return None
        busy = [n + len(linked) for n, linked in zip(calls, self._linked, strict=True)]
        slot = min(range(len(busy)), key=busy.__getitem__)
        return slot if busy[slot] < self.max_in_flight else None

    def queued(self, sample: FusedSample) -> None:
        """No actor had room: the driver takes it over."""
        self._put(Queued(sample=sample), wake=True)

    def called(self, sample: FusedSample, slot: int, ref: Any) -> None:
        """Sent to `slot` as a Ray call: the driver awaits `ref`."""
        self._put(Dispatched(sample=sample, slot=slot, ref=ref), wake=True)

    def linked(self, sample: FusedSample, slot: int) -> None:
        """About to go over `slot`'s link: held here until its reply; its prediction wakes the driver."""
        self._linked[slot][sample.seq] = sample
        self._put(Linked(sample=sample, slot=slot), wake=False)

    def open_link(self, slot: int) -> int:
        """A new link to `slot`: returns its generation, to pass back with its replies."""
        self._generation[slot] += 1
        return self._generation[slot]

    def current(self, slot: int, generation: int) -> bool:
        return self._generation[slot] == generation

    def reply(self, slot: int, generation: int, message: LinkReply) -> None:
        """What `slot`'s link of `generation` answered for a linked sample."""
        if not self.current(slot, generation):
            return
        sample = self._linked[slot].pop(message.seq, None)
        if sample is None:
            return  # given back to the driver when an earlier link broke
        match message:
            case Inferred(prediction=prediction):
                self._put(Predicted(prediction=prediction, slot=slot), wake=True)
            case InferFailed(why=why):
                self._put(Failed(sample=sample, slot=slot, why=why), wake=True)

    def retire(self, slot: int) -> None:
        """The fuser closes `slot`'s link itself (shutting down): its replies are ignored from now."""
        self._generation[slot] += 1

    def link_lost(self, slot: int) -> list[FusedSample]:
        """`slot`'s link is gone (closed by us, or its actor died): later replies on it are
        ignored, and the samples it held go back to the driver, in sequence order, to resubmit.
        Returns them."""
        self._generation[slot] += 1
        held, self._linked[slot] = self._linked[slot], {}
        lost = [held[seq] for seq in sorted(held)]
        for sample in lost:
            self._put(Lost(sample=sample, slot=slot), wake=True)
        return lost

    def take(self) -> list[Collected]:
        """Everything since the last `take`, oldest first; the outbox is emptied."""
        out, self._items, self.wake = self._items, [], False
        return out

    def _put(self, item: Collected, *, wake: bool) -> None:
        self._items.append(item)
        self.wake = self.wake or wake


class SlotCalls:
    """Per inference actor, what a live fuser awaits from it: its Ray calls not yet answered,
    and a `listen` asked after its link broke. Not thread-safe: the actor calls it under its lock.

    The caller says which references are answered (`done`, e.g. a non-blocking `ray.wait`),
    so the books are tested without Ray.
    """

    def __init__(self, slots: int) -> None:
        self._calls: list[list[Any]] = [[] for _ in range(slots)]
        self._relink: list[Any] = [None] * slots

    def called(self, slot: int, ref: Any) -> None:
        self._calls[slot].append(ref)

    def relink(self, slot: int, asked: Any) -> None:
        """A `listen` was asked of pool[slot]: its answer reopens the link."""
        self._relink[slot] = asked

    def settle(self, done: Callable[[list[Any]], list[Any]]) -> list[tuple[int, Any]]:
        """Forget the calls `done` says are answered; return (slot, asked) for each `listen`
        whose answer has come (forgotten here: the caller opens the link, or asks again)."""
        answered = []
        for slot, refs in enumerate(self._calls):
            if refs:
                finished = {id(r) for r in done(refs)}
                self._calls[slot] = [r for r in refs if id(r) not in finished]
            asked = self._relink[slot]
            if asked is not None and done([asked]):
                self._relink[slot] = None
                answered.append((slot, asked))
        return answered

    def unanswered(self) -> list[int]:
        """How many Ray calls each actor still holds for this fuser."""
        return [len(refs) for refs in self._calls]
