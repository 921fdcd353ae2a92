"""The Coalescer joins concurrent calls into batches and hands each caller its own result."""

from __future__ import annotations

import asyncio

import pytest

from engine.coalescer import Coalescer


async def test_concurrent_calls_share_one_batch_and_get_their_own_results() -> None:
    batches: list[list[int]] = []

    async def double(items: list[int]) -> list[int]:
        batches.append(items)
        return [i * 2 for i in items]

    join = Coalescer(double, size=100, delay=0.01)
    results = await asyncio.gather(*(join(i) for i in range(10)))
    assert results == [i * 2 for i in range(10)]
    assert batches == [list(range(10))]


async def test_a_full_batch_goes_at_once_and_the_rest_after_the_delay() -> None:
    batches: list[list[int]] = []

    async def echo(items: list[int]) -> list[int]:
        batches.append(items)
        return items

    join = Coalescer(echo, size=3, delay=0.01)
    assert await asyncio.gather(*(join(i) for i in range(7))) == list(range(7))
    assert batches == [[0, 1, 2], [3, 4, 5], [6]]


async def test_a_failing_batch_fails_every_caller_of_it_and_the_next_batch_runs() -> None:
    calls = 0

    async def flaky(items: list[int]) -> list[int]:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise ConnectionResetError("database away")
        return items

    join = Coalescer(flaky, size=10, delay=0.005)
    first = await asyncio.gather(join(1), join(2), return_exceptions=True)
    assert [type(r) for r in first] == [ConnectionResetError, ConnectionResetError]
    assert await join(3) == 3
    with pytest.raises(ConnectionResetError):
        raise first[0]  # type: ignore[misc]
