"""One load-test run over HTTP: the replayer with a real client, the sink's matcher, progress, drain.

Used by `engine loadtest run` and by the end-to-end benchmark (which keeps one sink for several runs).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Sequence
from dataclasses import dataclass

import aiohttp
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from engine import heap
from engine.loadtest.replay import LoopClock, Replayer, ReplayOptions, Send
from engine.loadtest.schedule import Planned
from engine.loadtest.sink import MatchingRecorder, ReplyMatcher
from engine.loadtest.stats import Stats
from engine.loadtest.targets import sign


@dataclass(frozen=True, slots=True)
class RunConfig:
    target: str  # base URL of the engine's receiver
    replay: ReplayOptions
    timeout: float = 10.0  # seconds per attempt (Slack gives up after 3, Meta after about 5)
    drain: float = 30.0  # seconds to wait after the load for replies still owed
    settle: float = 1.0  # then this long for late duplicates
    progress: bool = True


def http_sender(http: aiohttp.ClientSession, base: str) -> Send:
    async def send(item: Planned, attempt: int) -> int:
        # Signed at send time: Slack's timestamp must be fresh, also on a retry.
        headers = sign(item.target, item.body, item.content_type, time.time())
        if attempt and item.platform == "slack":
            headers["X-Slack-Retry-Num"] = str(attempt)
            headers["X-Slack-Retry-Reason"] = "http_error"
        try:
            async with http.post(base + item.target.path, data=item.body, headers=headers) as resp:
                await resp.read()
                return resp.status
        except (aiohttp.ClientError, TimeoutError):
            return 0

    return send


async def _show_progress(stats: Stats, clock: LoopClock, start: float, console: Console) -> None:
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
               TextColumn("{task.fields[info]}"))  # fmt: skip
    with Progress(*columns, console=console, transient=True) as progress:
        task = progress.add_task("replay", total=stats.planned, info="")
        while True:
            elapsed = max(clock.now() - start, 1e-9)
            info = (f"{stats.ok / elapsed:.0f} req/s, {stats.failed} failed, {stats.retries} retries, "
                    f"ack p99 {stats.ack.percentile(99):.0f} ms")  # fmt: skip
            if stats.matched:
                info += f", {stats.matched} replies, e2e p99 {stats.e2e.percentile(99):.0f} ms"
            progress.update(task, completed=stats.ok + stats.failed, info=info)
            await asyncio.sleep(0.25)


async def execute(
    items: Sequence[Planned], config: RunConfig, recorder: MatchingRecorder | None, console: Console | None = None
) -> Stats:
    """Replay `items` against config.target; with a recorder (the sink), match replies and wait for
    the ones still owed up to config.drain seconds. Returns the filled-in Stats (lost set)."""
    # The planned requests live as long as the run: a full collection over a few hundred thousand of
    # them paused the load tester 100-200 ms, and late requests and late-stamped replies read as the
    # engine's latency. Frozen before the clock starts: the collection freezing begins with would
    # otherwise make the first requests late.
    with heap.frozen():
        return await _replay(items, config, recorder, console)


async def _replay(
    items: Sequence[Planned], config: RunConfig, recorder: MatchingRecorder | None, console: Console | None
) -> Stats:
    clock = LoopClock()
    stats = Stats()
    start = clock.now()
    matcher = ReplyMatcher(stats, clock.now, start) if recorder is not None else None
    if recorder is not None:
        recorder.matcher = matcher
    limit = config.replay.connections or min(config.replay.max_in_flight, 1000)
    connector = aiohttp.TCPConnector(limit=limit, limit_per_host=limit)
    timeout = aiohttp.ClientTimeout(total=config.timeout)
    progress = None
    try:
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as http:
            if config.progress:
                progress = asyncio.create_task(_show_progress(stats, clock, start, console or Console(stderr=True)))
            replayer = Replayer(items, http_sender(http, config.target.rstrip("/")), clock, stats, config.replay,
                                matcher)  # fmt: skip
            await replayer.run(start)
            if matcher is not None:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(matcher.settled.wait(), config.drain)
                await asyncio.sleep(config.settle)
    finally:
        if progress is not None:
            progress.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await progress
        if recorder is not None:
            recorder.matcher = None
    stats.lost = matcher.outstanding if matcher is not None else 0
    return stats
