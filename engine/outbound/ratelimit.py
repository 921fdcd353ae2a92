"""Outbound rate limits: token buckets per channel and per chat, plus blocks until a time.

Each bucket is a GCRA "theoretical arrival time" (a token bucket in one float). Tokens are only
ever taken at the moment of sending, never booked ahead: booking a shared per-channel token at the
future slot of one slow chat would hold every other chat of that channel back.

Waiters for one chat queue behind a per-chat asyncio.Lock (FIFO, so a conversation's replies keep
their order); the lock holder sleeps until every key allows it and then takes one token from each.
That lock only ever holds back later messages to the same chat, which could not go first anyway;
other chats and channels never wait on it. A platform's Retry-After / flood answer blocks a key
until a time (block()); waiters re-check after every sleep, so a block placed meanwhile holds too.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from engine.models import ChannelType, OutboundMessage, SendError

if TYPE_CHECKING:
    from engine.settings import Settings

EPSILON = 1e-9  # float noise of clock arithmetic, not a wait
# Throttling codes that limit the whole number / page / app, not one recipient (channels.md §1.7):
# a wait after one of these holds back every chat of the channel.
CHANNEL_WIDE_CODES = frozenset({"4", "613", "80007", "130429", "131057"})


@dataclass(frozen=True, slots=True)
class Limit:
    """rate tokens per second, up to burst tokens at once."""

    rate: float
    burst: float = 1.0

    @property
    def interval(self) -> float:
        return 1.0 / self.rate


@dataclass(frozen=True, slots=True)
class ChannelLimits:
    per_channel: Limit  # one bot / business number / page / workspace
    per_chat: Limit  # one user, chat or Slack channel


# Defaults from channels.md. WhatsApp: 80 msg/s per business number (§1.7) and a pair rate of
# ~1 per 6 s to one user with bursts tolerated (45 is the documented breaking point; stay well
# below). Telegram: ~30 msg/s per bot, 1 msg/s per chat (§2.6). Slack: ~1 msg/s per channel with
# short bursts, an unpublished workspace cap (§3.6). Messenger/Instagram are unpublished: sane guesses.
DEFAULT_LIMITS: dict[ChannelType, ChannelLimits] = {
    ChannelType.WHATSAPP: ChannelLimits(Limit(80.0, 80.0), Limit(1 / 6, 20.0)),
    ChannelType.TELEGRAM: ChannelLimits(Limit(30.0, 30.0), Limit(1.0, 1.0)),
    ChannelType.SLACK: ChannelLimits(Limit(10.0, 20.0), Limit(1.0, 3.0)),
    ChannelType.MESSENGER: ChannelLimits(Limit(20.0, 40.0), Limit(1.0, 5.0)),
    ChannelType.INSTAGRAM: ChannelLimits(Limit(20.0, 40.0), Limit(1.0, 5.0)),
    ChannelType.WEB: ChannelLimits(Limit(1000.0, 1000.0), Limit(100.0, 100.0)),
}


def limits_for(channel_type: ChannelType, settings: Settings | None = None) -> ChannelLimits:
    """The limits of one platform: DEFAULT_LIMITS with settings.rate_limits overrides applied
    ({"telegram": {"chat_rate": 1, "chat_burst": 1, "channel_rate": 30, "channel_burst": 30}})."""
    base = DEFAULT_LIMITS[channel_type]
    override = (settings.rate_limits if settings is not None else {}).get(channel_type.value, {})
    return ChannelLimits(
        Limit(
            override.get("channel_rate", base.per_channel.rate), override.get("channel_burst", base.per_channel.burst)
        ),
        Limit(override.get("chat_rate", base.per_chat.rate), override.get("chat_burst", base.per_chat.burst)),
    )


class RateLimiter:
    """Token buckets by key. clock and sleep are injectable so tests run on a fake clock."""

    def __init__(
        self,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
        sweep_every: int = 4096,
    ) -> None:
        self.clock = clock
        self.sleep = sleep
        self._tat: dict[str, float] = {}  # key -> theoretical arrival time of its next token
        self._blocked: dict[str, float] = {}  # key -> clock time before which nothing goes
        self._queues: dict[str, list[Any]] = {}  # key -> [lock, number of waiters]
        self._ops = 0
        self._sweep_every = sweep_every

    def _allowed_at(self, key: str, limit: Limit) -> float:
        tat = self._tat.get(key, float("-inf"))
        return max(tat - (limit.burst - 1) * limit.interval, self._blocked.get(key, float("-inf")))

    def delay(self, keys: Iterable[tuple[str, Limit]]) -> float:
        """Seconds until one token of every key is available (0.0: now). Takes nothing."""
        now = self.clock()
        wait = max([0.0, *(self._allowed_at(k, lim) - now for k, lim in keys)])
        return wait if wait > EPSILON else 0.0

    def try_acquire(self, keys: Iterable[tuple[str, Limit]]) -> bool:
        """Take one token of every key if all have one now; else take nothing and return False."""
        keys = list(keys)
        if self.delay(keys) > 0:
            return False
        now = self.clock()
        for key, limit in keys:
            self._tat[key] = max(self._tat.get(key, now), now) + limit.interval
        self._ops += 1
        if self._ops % self._sweep_every == 0:
            self._sweep(now)
        return True

    async def acquire(self, keys: Iterable[tuple[str, Limit]]) -> None:
        """Wait for, then take, one token of every key. Waiters with the same last key (the chat)
        go in arrival order; they hold nothing that another chat or channel waits for."""
        keys = list(keys)
        if keys[-1][0] not in self._queues and self.try_acquire(keys):
            return  # nobody waits for this chat and every key has a token: no queue to join
        async with self._queue(keys[-1][0]):
            while not self.try_acquire(keys):
                await self.sleep(self.delay(keys))

    @contextlib.asynccontextmanager
    async def _queue(self, key: str) -> AsyncIterator[None]:
        entry = self._queues.setdefault(key, [asyncio.Lock(), 0])
        entry[1] += 1
        try:
            async with entry[0]:
                yield
        finally:
            entry[1] -= 1
            if entry[1] == 0:  # nobody else queued on this key: forget its lock
                del self._queues[key]

    def block(self, key: str, until: float) -> None:
        """Let nothing through on key before clock time `until` (Retry-After, pair-rate errors)."""
        self._blocked[key] = max(until, self._blocked.get(key, until))

    def block_for(self, key: str, seconds: float) -> None:
        self.block(key, self.clock() + seconds)

    def block_after(self, channel_id: str, chat: str, error: SendError) -> None:
        """Honour a refused send's retry_after on the key it concerns (the chat, or the whole
        channel for account-wide throttling codes). No retry_after: nothing to block."""
        if error.retry_after is None:
            return
        wide = error.code in CHANNEL_WIDE_CODES
        key = self.channel_key(channel_id) if wide else self.chat_key(channel_id, chat)
        self.block_for(key, error.retry_after)

    def _sweep(self, now: float) -> None:
        # A bucket whose arrival time has passed is full again: the same as no entry at all.
        self._tat = {k: t for k, t in self._tat.items() if t > now}
        self._blocked = {k: t for k, t in self._blocked.items() if t > now}

    # Key helpers, so the sender and its tests agree on key names.

    @staticmethod
    def channel_key(channel_id: str) -> str:
        return f"channel:{channel_id}"

    @staticmethod
    def chat_key(channel_id: str, chat: str) -> str:
        return f"chat:{channel_id}:{chat}"

    @staticmethod
    def chat_of(message: OutboundMessage) -> str:
        """The recipient a platform's per-chat limit counts: a Slack channel (all its threads
        together), a Telegram chat (all its topics), else the conversation key."""
        target = message.reply_to
        if message.channel_type is ChannelType.SLACK and target.get("channel"):
            return str(target["channel"])
        if message.channel_type is ChannelType.TELEGRAM and target.get("chat_id") is not None:
            return str(target["chat_id"])
        return message.conversation_key

    def send_keys(self, channel_id: str, chat: str, limits: ChannelLimits) -> list[tuple[str, Limit]]:
        return [(self.channel_key(channel_id), limits.per_channel), (self.chat_key(channel_id, chat), limits.per_chat)]

    async def acquire_send(self, channel_id: str, chat: str, limits: ChannelLimits) -> None:
        """Wait until one more message may go to `chat` of `channel_id`."""
        await self.acquire(self.send_keys(channel_id, chat, limits))
