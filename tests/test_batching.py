import asyncio

import pytest

from fusion.batching import DynamicBatcher


def run(coro):
    return asyncio.run(coro)


def test_full_batches_form_without_waiting():
    calls = []

    async def fn(items):
        calls.append(list(items))
        return [i * 10 for i in items]

    async def main():
        b = DynamicBatcher(fn, max_batch_size=4, max_wait_s=10.0)
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        out = await asyncio.gather(*(b.submit(i) for i in range(8)))
        return out, loop.time() - t0

    results, waited = run(main())
    assert waited < 5.0  # did not sit out the 10 s wait: batches were full
    assert results == [i * 10 for i in range(8)]
    assert calls == [[0, 1, 2, 3], [4, 5, 6, 7]]


def test_partial_batch_runs_after_max_wait():
    async def fn(items):
        return items

    async def main():
        b = DynamicBatcher(fn, max_batch_size=8, max_wait_s=0.05)
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        out = await asyncio.gather(b.submit("a"), b.submit("b"))
        return out, loop.time() - t0, b.batch_sizes

    out, waited, sizes = run(main())
    assert out == ["a", "b"] and sizes == [2]
    assert 0.04 <= waited < 1.0


def test_late_items_go_to_the_next_batch():
    async def fn(items):
        return items

    async def main():
        b = DynamicBatcher(fn, max_batch_size=8, max_wait_s=0.02)
        first = asyncio.ensure_future(b.submit(1))
        await asyncio.sleep(0.1)
        second = await b.submit(2)
        return await first, second, b.batch_sizes

    assert run(main()) == (1, 2, [1, 1])


def test_no_wait_runs_a_lone_item_at_once_and_batches_what_queues_meanwhile():
    """max_wait 0 (the live default): an idle batcher starts on the first item; the items that
    arrive while that batch runs form the next one, together."""
    release = asyncio.Event()
    calls = []

    async def fn(items):
        calls.append(list(items))
        if len(calls) == 1:
            await release.wait()  # the model is busy on the first item
        return items

    async def main():
        b = DynamicBatcher(fn, max_batch_size=8, max_wait_s=0.0)
        first = asyncio.ensure_future(b.submit(0))
        await asyncio.sleep(0.01)
        assert calls == [[0]]  # started without waiting for company
        rest = [asyncio.ensure_future(b.submit(i)) for i in (1, 2, 3)]
        await asyncio.sleep(0.01)
        release.set()
        return await first, await asyncio.gather(*rest)

    assert run(main()) == (0, [1, 2, 3])
    assert calls == [[0], [1, 2, 3]]


def test_batch_failure_reaches_every_caller_and_the_loop_survives():
    async def fn(items):
        if "bad" in items:
            raise ValueError("bad item in batch")
        return items

    async def main():
        b = DynamicBatcher(fn, max_batch_size=2, max_wait_s=0.01)
        results = await asyncio.gather(b.submit("ok"), b.submit("bad"), return_exceptions=True)
        after = await b.submit("fine")
        return results, after

    results, after = run(main())
    assert all(isinstance(r, ValueError) for r in results) and after == "fine"


@pytest.mark.parametrize(("size", "wait"), [(0, 0.1), (4, -1.0)])
def test_bad_arguments_are_named(size, wait):
    async def fn(items):
        return items

    with pytest.raises(ValueError, match=r"max_batch_size|max_wait_s"):
        DynamicBatcher(fn, max_batch_size=size, max_wait_s=wait)
