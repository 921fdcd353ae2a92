"""The replayer: sends planned requests open loop (each at its due time) or closed loop (N
connections as fast as answers come back), keeping every conversation in order, retrying like the
platforms do, and recording what happened in Stats.

Open loop measures latency from each request's due time, not from when it actually went out, so a
stalled target shows up as latency rather than as a slower client (coordinated omission). In both
modes a conversation's next request goes out only after its previous one was answered 200 (or given
up on), as the platforms deliver. The clock is injected, so tests run on virtual time.
"""

from __future__ import annotations

import asyncio
import heapq
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from engine.loadtest.schedule import Planned
from engine.loadtest.sink import Owed, ReplyMatcher
from engine.loadtest.stats import Stats

# Sends one attempt; returns the HTTP status, or 0 when no answer came (connection error, timeout).
Send = Callable[[Planned, int], Awaitable[int]]


class Clock(Protocol):
    def now(self) -> float: ...

    async def sleep(self, seconds: float) -> None: ...


class LoopClock:
    """The monotonic clock, read directly: uvloop's loop.time() is cached per loop iteration and
    counts whole milliseconds, too coarse for a latency histogram."""

    def now(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


@dataclass(frozen=True, slots=True)
class ReplayOptions:
    connections: int | None = None  # None: open loop; N: closed loop with N connections
    retries: int = 3  # attempts after the first when the answer is not 200
    backoff: float = 1.0  # seconds before the first retry, doubled each time ...
    max_backoff: float = 16.0  # ... up to this
    ramp: float = 0.0  # closed loop: connections start evenly over this many seconds
    duration: float | None = None  # closed loop: no new request after this many seconds
    max_in_flight: int = 10_000  # open loop: requests started and not finished (incl. waiting on order)


class Replayer:
    def __init__(
        self,
        items: Sequence[Planned],
        send: Send,
        clock: Clock,
        stats: Stats,
        options: ReplayOptions,
        matcher: ReplyMatcher | None = None,
    ) -> None:
        self.items = items
        self.send = send
        self.clock = clock
        self.stats = stats
        self.options = options
        self.matcher = matcher
        self.start = 0.0
        stats.planned = len(items)

    async def run(self, start: float | None = None) -> None:
        """Send everything (bounded by the plan, and by duration in closed loop); returns when every
        request has been answered or given up on."""
        self.start = self.stats.started = self.clock.now() if start is None else start
        if self.options.connections:
            await self._closed_loop(self.options.connections)
        else:
            await self._open_loop()
        self.stats.load_seconds = self.clock.now() - self.start

    async def _open_loop(self) -> None:
        slots = asyncio.Semaphore(self.options.max_in_flight)
        last: dict[str, asyncio.Task[None]] = {}
        running: set[asyncio.Task[None]] = set()
        for item in self.items:
            wait = self.start + item.due - self.clock.now()
            if wait > 0:
                await self.clock.sleep(wait)
            await slots.acquire()
            self.stats.late.record(self.clock.now() - self.start - item.due)
            task = asyncio.create_task(self._after(last.get(item.conversation), item))
            last[item.conversation] = task
            running.add(task)
            task.add_done_callback(running.discard)
            task.add_done_callback(lambda _: slots.release())
        while running:
            await asyncio.gather(*running)

    async def _after(self, previous: asyncio.Task[None] | None, item: Planned) -> None:
        if previous is not None and not previous.done():
            await asyncio.wait([previous])
        await self._deliver(item, self.start + item.due)

    async def _closed_loop(self, connections: int) -> None:
        queues: dict[str, deque[Planned]] = {}
        for item in self.items:
            queues.setdefault(item.conversation, deque()).append(item)
        ready = [(q[0].seq, conversation) for conversation, q in queues.items()]
        heapq.heapify(ready)
        changed = asyncio.Condition()
        busy = 0
        deadline = self.start + self.options.duration if self.options.duration is not None else None

        async def connection(index: int) -> None:
            nonlocal busy
            if self.options.ramp:
                await self.clock.sleep(self.options.ramp * index / connections)
            while deadline is None or self.clock.now() < deadline:
                if not ready:
                    if busy == 0:
                        return  # nothing left anywhere
                    async with changed:
                        await changed.wait()
                    continue
                _, conversation = heapq.heappop(ready)
                item = queues[conversation].popleft()
                busy += 1
                try:
                    await self._deliver(item, self.clock.now())
                finally:
                    busy -= 1
                    if queues[conversation]:
                        heapq.heappush(ready, (queues[conversation][0].seq, conversation))
                    async with changed:
                        changed.notify_all()

        await asyncio.gather(*(connection(i) for i in range(connections)))

    async def _deliver(self, item: Planned, due: float) -> None:
        """One request with the platform's retries; latency counted from `due` (a clock time)."""
        owed: Owed | None = None
        if self.matcher is not None and item.expect and item.reply_chat is not None:
            # Before the first attempt: the reply can arrive before our client has read the 200.
            owed = self.matcher.expect(item.platform, item.reply_chat, due, item.expect)
        stats = self.stats
        stats.sent += 1
        bucket = stats.second(due - self.start)
        bucket.sent += 1
        for attempt in range(self.options.retries + 1):
            status = await self.send(item, attempt)
            stats.statuses[str(status) if status else "error"] += 1
            if status == 200:
                done = self.clock.now()
                stats.record_ack(due - self.start, done - self.start, done - due)
                return
            if attempt < self.options.retries:
                stats.retries += 1
                await self.clock.sleep(min(self.options.backoff * 2**attempt, self.options.max_backoff))
        stats.failed += 1
        bucket.errors += 1
        if owed is not None and self.matcher is not None:
            self.matcher.withdraw(owed)
