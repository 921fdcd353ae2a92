"""Many concurrent callers, one round trip: a Coalescer joins the calls made within a few milliseconds
into one batched call and hands each caller its own result.

The sender's lanes each record one reply at a time (claim, then mark sent), and the worker's lanes
each load one conversation the first time they see it; across hundreds of lanes that is hundreds of
single-row round trips a second. Joined, it is a few statements a second, and a caller waits at most
`delay` longer than it would alone.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

I = TypeVar("I")  # noqa: E741 - an item
R = TypeVar("R")  # its result


class Coalescer(Generic[I, R]):
    def __init__(
        self, run: Callable[[list[I]], Awaitable[Sequence[R]]], *, size: int = 256, delay: float = 0.002
    ) -> None:
        """run(items) must return one result per item, in order; if it raises, every caller of that
        batch gets the exception."""
        self._run = run
        self._size = size
        self._delay = delay
        self._items: list[I] = []
        self._waiters: list[asyncio.Future[R]] = []
        self._timer: asyncio.TimerHandle | None = None
        self._running: set[asyncio.Task[None]] = set()

    async def __call__(self, item: I) -> R:
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._items.append(item)
        self._waiters.append(future)
        if len(self._items) >= self._size:
            self._go()
        elif self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self._delay, self._go)
        return await future

    def _go(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        items, waiters = self._items, self._waiters
        self._items, self._waiters = [], []
        if items:
            task = asyncio.get_running_loop().create_task(self._settle(items, waiters))
            self._running.add(task)
            task.add_done_callback(self._running.discard)

    async def _settle(self, items: list[I], waiters: list[asyncio.Future[R]]) -> None:
        try:
            results = await self._run(items)
        except asyncio.CancelledError:
            for waiter in waiters:
                waiter.cancel()
            raise
        except Exception as exc:  # every caller of the batch sees the failure (and may retry)
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_exception(exc)
            return
        for waiter, result in zip(waiters, results, strict=True):
            if not waiter.done():  # a cancelled caller
                waiter.set_result(result)
