"""Dynamic batching: collect items until the batch is full or the oldest has waited long enough.

Private machinery behind one small API, after Ray Serve's `@serve.batch`: callers `await
submit(item)` one item at a time; a single loop gathers up to `max_batch_size` items, waiting
at most `max_wait_s` after the first one arrived, calls the batch function once, and hands each
caller its own result (or the batch's exception).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

from fusion.errors import InputError

T = TypeVar("T")
R = TypeVar("R")


class DynamicBatcher(Generic[T, R]):
    """Batches concurrent `submit` calls into calls of `fn(list_of_items) -> list_of_results`."""

    def __init__(
        self,
        fn: Callable[[list[T]], Awaitable[Sequence[R]]],
        *,
        max_batch_size: int,
        max_wait_s: float,
    ) -> None:
        if max_batch_size < 1:
            raise InputError(f"max_batch_size must be >= 1, got {max_batch_size}")
        if max_wait_s < 0:
            raise InputError(f"max_wait_s must be >= 0, got {max_wait_s}")
        self._fn = fn
        self.max_batch_size = max_batch_size
        self.max_wait_s = max_wait_s
        self._queue: asyncio.Queue[tuple[T, asyncio.Future[R]]] | None = None
        self._loop_task: asyncio.Task[None] | None = None
        self.batch_sizes: list[int] = []  # sizes of recent batches, for metrics; bounded below

    @property
    def pending(self) -> int:
        return 0 if self._queue is None else self._queue.qsize()

    async def submit(self, item: T) -> R:
        """Queue one item; resolves to its result when its batch has run."""
        if self._queue is None:
            self._queue = asyncio.Queue()
            self._loop_task = asyncio.get_running_loop().create_task(self._run())
        fut: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        await self._queue.put((item, fut))
        return await fut

    async def _next_batch(self) -> list[tuple[T, asyncio.Future[R]]]:
        """Block for one item, then take more until full or `max_wait_s` after the first.

        Items already queued join at once; with `max_wait_s` 0 a batch is what queued up while
        the previous one ran, so an idle model starts on a lone item without waiting.
        """
        assert self._queue is not None
        batch = [await self._queue.get()]
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.max_wait_s
        while len(batch) < self.max_batch_size:
            if not self._queue.empty():
                batch.append(self._queue.get_nowait())
                continue
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            try:
                batch.append(await asyncio.wait_for(self._queue.get(), timeout=remaining))
            except TimeoutError:
                break
        return batch

    async def _run(self) -> None:
        while True:
            batch = await self._next_batch()
            items = [item for item, _ in batch]
            self.batch_sizes = [*self.batch_sizes[-255:], len(items)]
            try:
                results = await self._fn(items)
                if len(results) != len(items):
                    raise RuntimeError(
                        f"batch function returned {len(results)} results for {len(items)} items"
                    )
            except Exception as err:  # every caller of the batch sees the failure
                for _, fut in batch:
                    if not fut.done():
                        fut.set_exception(err)
                continue
            for (_, fut), res in zip(batch, results, strict=True):
                if not fut.done():
                    fut.set_result(res)
