"""The fake platform sink: the fake send APIs (engine.fake_platforms), with every reply matched to
the request that caused it, for end-to-end latency.

The target's ENGINE_*_API_BASE point here. A reply is matched first-in-first-out within its chat:
requests of one conversation are sent one after another, so the oldest request of the chat still
owed a reply is the one this reply answers. A reply nobody is owed is a duplicate (its chat was
written to by this run) or unmatched (other traffic).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

from aiohttp import web

from engine.fake_platforms import Recorded, Recorder, create_app
from engine.loadtest.stats import Stats

# The send calls that deliver a chat message (not answerCallbackQuery, mark-as-read, auth.test ...).
REPLY_METHODS = {
    "telegram": "sendMessage",
    "whatsapp": "messages",
    "messenger": "messages",
    "slack": "chat.postMessage",
}


def sink_platform(platform: str) -> str:
    """The fake API a platform's replies arrive at (Instagram sends through the Messenger API)."""
    return "messenger" if platform == "instagram" else platform


@dataclass(slots=True)
class Owed:
    platform: str
    sent_at: float  # clock time the request was due (open loop) or sent (closed loop)
    remaining: int


class ReplyMatcher:
    """Requests owed replies, per (sink platform, chat), oldest first."""

    def __init__(self, stats: Stats, now: Callable[[], float], start: float) -> None:
        self.stats = stats
        self.now = now
        self.start = start
        self._owed: dict[tuple[str, str], deque[Owed]] = {}
        self._chats: set[tuple[str, str]] = set()
        self.outstanding = 0
        self.settled = asyncio.Event()  # set while no reply is owed
        self.settled.set()

    def expect(self, platform: str, chat: str, sent_at: float, count: int) -> Owed:
        owed = Owed(platform, sent_at, count)
        key = (sink_platform(platform), chat)
        self._owed.setdefault(key, deque()).append(owed)
        self._chats.add(key)
        self.outstanding += count
        self.stats.expected_replies += count
        if self.outstanding > 0:
            self.settled.clear()
        return owed

    def withdraw(self, owed: Owed) -> None:
        """The request was never accepted: it owes nothing (it is counted as failed instead)."""
        self.outstanding -= owed.remaining
        self.stats.expected_replies -= owed.remaining
        owed.remaining = 0
        if self.outstanding <= 0:
            self.settled.set()

    def reply(self, platform: str, chat: str | None) -> None:
        now = self.now()
        key = (platform, str(chat))
        queue = self._owed.get(key)
        while queue and queue[0].remaining <= 0:
            queue.popleft()
        if not queue:
            if key in self._chats:
                self.stats.duplicated += 1
            else:
                self.stats.unmatched += 1
            return
        owed = queue[0]
        owed.remaining -= 1
        self.outstanding -= 1
        if self.outstanding <= 0:
            self.settled.set()
        self.stats.record_reply(owed.platform, now - self.start, now - owed.sent_at)


class MatchingRecorder(Recorder):
    """The fakes' recorder, keeping only the latest requests, and handing each reply to the matcher."""

    def __init__(self, matcher: ReplyMatcher | None = None) -> None:
        super().__init__(max_requests=1000)
        self.matcher = matcher

    def record(self, item: Recorded) -> None:
        super().record(item)
        if self.matcher is not None and REPLY_METHODS.get(item.platform) == item.method:
            if item.platform == "whatsapp" and item.body.get("status") == "read":
                return  # a read receipt we sent, not a reply
            self.matcher.reply(item.platform, item.chat)


@contextlib.asynccontextmanager
async def running_sink(recorder: MatchingRecorder, host: str, port: int) -> AsyncIterator[str]:
    """Serve the fake platforms (and the fake shop) on host:port; yields the base URL."""
    runner = web.AppRunner(create_app(recorder), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    bound = runner.addresses[0][1] if runner.addresses else port  # the real port when port is 0
    try:
        yield f"http://{host}:{bound}"
    finally:
        await runner.cleanup()
