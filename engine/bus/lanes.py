"""Per-key lanes: jobs with the same key run strictly one after another, in submission order;
jobs with different keys run concurrently. A worker keys lanes by conversation."""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Hashable

log = logging.getLogger(__name__)

Job = Callable[[], Awaitable[None]]


class Lanes:
    def __init__(self) -> None:
        self._queues: dict[Hashable, deque[Job]] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    def __len__(self) -> int:
        return len(self._queues)

    def submit(self, key: Hashable, job: Job) -> None:
        queue = self._queues.get(key)
        if queue is not None:
            queue.append(job)
            return
        self._queues[key] = deque([job])
        task = asyncio.create_task(self._run(key), name=f"lane-{key}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, key: Hashable) -> None:
        queue = self._queues[key]
        try:
            while queue:
                job = queue[0]
                try:
                    await job()
                except Exception:  # a job handles its own failures; never let one stop the lane
                    log.exception("lane job failed")
                queue.popleft()
        finally:
            del self._queues[key]

    async def drain(self, grace: float) -> bool:
        """Wait for every lane to empty; False if some were still running at the timeout."""
        if not self._tasks:
            return True
        _, pending = await asyncio.wait(set(self._tasks), timeout=grace)
        return not pending

    async def cancel(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
