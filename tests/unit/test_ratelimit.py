from __future__ import annotations

import asyncio
import heapq
import itertools

import pytest

from engine.models import ChannelType, OutboundMessage, SendError
from engine.outbound.ratelimit import DEFAULT_LIMITS, ChannelLimits, Limit, RateLimiter, limits_for
from engine.settings import Settings

# The clocks start far from zero: there a wait of N seconds and the clock time N are different
# things, so a Retry-After taken as an absolute time (or a deadline taken as a duration) shows.
T0 = 1_000_000.0


class FakeTime:
    """Virtual time: sleep() parks the caller until advance() moves the clock past its deadline."""

    def __init__(self, start: float = T0) -> None:
        self.start = start
        self.now = start
        self._waiters: list[tuple[float, int, asyncio.Future[None]]] = []
        self._seq = itertools.count()

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._waiters, (self.now + seconds, next(self._seq), future))
        await future

    async def run(self, *tasks: asyncio.Task[object]) -> None:
        """Drive the tasks to completion, jumping the clock from one deadline to the next."""
        while not all(t.done() for t in tasks):
            for _ in range(5):  # let every runnable task reach its next sleep
                await asyncio.sleep(0)
            if self._waiters:
                deadline, _, future = heapq.heappop(self._waiters)
                self.now = max(self.now, deadline)
                future.set_result(None)
        for t in tasks:
            t.result()


def max_in_window(times: list[float], window: float) -> int:
    times = sorted(times)
    return max(sum(1 for u in times if t <= u < t + window - 1e-9) for t in times)


TELEGRAM = DEFAULT_LIMITS[ChannelType.TELEGRAM]


async def send_burst(limiter: RateLimiter, fake: FakeTime, chat: str, n: int, limits: ChannelLimits, log: list):
    for i in range(n):
        await limiter.acquire_send("bot1", chat, limits)
        log.append((chat, i, fake.now - fake.start))  # seconds since the test began


async def test_one_message_per_second_per_telegram_chat() -> None:
    fake = FakeTime()
    limiter = RateLimiter(clock=fake.clock, sleep=fake.sleep)
    log: list[tuple[str, int, float]] = []
    # Ten concurrent senders per chat, ten messages each: a burst far above the limit.
    tasks = [
        asyncio.create_task(send_burst(limiter, fake, chat, 10, TELEGRAM, log))
        for chat in ("111", "222", "333")
        for _ in range(10)
    ]
    await fake.run(*tasks)
    assert len(log) == 300
    for chat in ("111", "222", "333"):
        times = [t for c, _, t in log if c == chat]
        assert max_in_window(times, 1.0) == 1  # never two messages to one chat within a second
    # Chats do not wait for each other: all three finish together, not one after another.
    assert max(t for _, _, t in log) == pytest.approx(99.0)
    # Overall the bot never exceeds its 30/s (here only 3 chats, so about 3/s).
    assert max_in_window([t for _, _, t in log], 1.0) <= 30
    assert limiter._queues == {}  # per-chat queues are dropped once empty


async def test_per_channel_limit_applies_across_chats() -> None:
    fake = FakeTime()
    limiter = RateLimiter(clock=fake.clock, sleep=fake.sleep)
    log: list[tuple[str, int, float]] = []
    limits = ChannelLimits(per_channel=Limit(5.0, 5.0), per_chat=Limit(100.0, 100.0))
    tasks = [asyncio.create_task(send_burst(limiter, fake, f"chat{i}", 4, limits, log)) for i in range(20)]
    await fake.run(*tasks)
    times = [t for *_, t in log]
    assert len(times) == 80
    # Over any window W the channel lets through at most burst + rate * W.
    for window in (0.5, 1.0, 3.0):
        assert max_in_window(times, window) <= 5 + 5 * window


async def test_whatsapp_pair_rate_burst_then_one_per_six_seconds() -> None:
    fake = FakeTime()
    limiter = RateLimiter(clock=fake.clock, sleep=fake.sleep)
    log: list[tuple[str, int, float]] = []
    limits = DEFAULT_LIMITS[ChannelType.WHATSAPP]
    burst = int(limits.per_chat.burst)
    await fake.run(asyncio.create_task(send_burst(limiter, fake, "BSUID", burst + 3, limits, log)))
    times = [t for *_, t in log]
    assert times[:burst] == [0.0] * burst
    assert times[burst:] == pytest.approx([6.0, 12.0, 18.0])


async def send_noted(limiter: RateLimiter, order: list[object], name: object) -> None:
    """One send to Telegram chat 111, noted in `order` once the limiter lets it go."""
    await limiter.acquire_send("bot1", "111", TELEGRAM)
    order.append(name)


async def test_order_is_first_come_first_served_per_key() -> None:
    fake = FakeTime()
    limiter = RateLimiter(clock=fake.clock, sleep=fake.sleep)
    order: list[object] = []

    tasks = [asyncio.create_task(send_noted(limiter, order, i)) for i in range(8)]
    await fake.run(*tasks)
    assert order == list(range(8))


async def test_a_newcomer_never_overtakes_a_waiter_when_a_token_frees_up() -> None:
    """A send that finds a token free goes at once, but not past one already waiting for that chat."""
    fake = FakeTime()
    limiter = RateLimiter(clock=fake.clock, sleep=fake.sleep)
    order: list[object] = []

    await send_noted(limiter, order, "a")  # a token was free: no waiting at all
    b = asyncio.create_task(send_noted(limiter, order, "b"))
    for _ in range(5):
        await asyncio.sleep(0)  # b now sleeps until the chat's next token
    fake.now += 1.0  # that token is free, and b has not woken yet
    c = asyncio.create_task(send_noted(limiter, order, "c"))
    await fake.run(b, c)
    assert order == ["a", "b", "c"]


async def test_block_holds_a_key_and_late_blocks_reach_sleepers() -> None:
    fake = FakeTime()
    limiter = RateLimiter(clock=fake.clock, sleep=fake.sleep)
    chat = limiter.chat_key("bot1", "111")
    limiter.block_for(chat, 7.0)  # a 429 with retry_after 7
    log: list[tuple[str, int, float]] = []
    other: list[tuple[str, int, float]] = []
    blocked = asyncio.create_task(send_burst(limiter, fake, "111", 3, TELEGRAM, log))
    free = asyncio.create_task(send_burst(limiter, fake, "222", 3, TELEGRAM, other))
    await fake.run(blocked, free)
    assert [t for *_, t in log] == [7.0, 8.0, 9.0]
    assert [t for *_, t in other] == [0.0, 1.0, 2.0]  # other chats are not held up

    # A block placed while senders already sleep towards their slots still holds them back.
    log.clear()
    task = asyncio.create_task(send_burst(limiter, fake, "111", 3, TELEGRAM, log))
    for _ in range(5):
        await asyncio.sleep(0)
    limiter.block(chat, fake.now + 30.0)  # an absolute clock time
    await fake.run(task)
    assert [t for *_, t in log] == [39.0, 40.0, 41.0]


def test_delay_and_try_acquire_without_sleeping() -> None:
    now = [T0]
    limiter = RateLimiter(clock=lambda: now[0])
    keys = limiter.send_keys("bot1", "111", TELEGRAM)
    assert limiter.delay(keys) == 0.0
    assert limiter.try_acquire(keys)
    assert limiter.delay(keys) == pytest.approx(1.0)  # peeking takes nothing
    assert not limiter.try_acquire(keys)
    assert limiter.delay(keys) == pytest.approx(1.0)  # nor does a refused try
    now[0] += 1.0
    assert limiter.try_acquire(keys)
    other_chat = limiter.send_keys("bot1", "222", TELEGRAM)
    assert limiter.try_acquire(other_chat)  # the shared bot key has 30/s to spare


async def test_a_slow_chat_never_holds_back_the_shared_channel_key() -> None:
    fake = FakeTime()
    limiter = RateLimiter(clock=fake.clock, sleep=fake.sleep)
    limits = ChannelLimits(per_channel=Limit(1.0, 1.0), per_chat=Limit(0.01, 1.0))  # chat: 1 per 100 s
    log: list[tuple[str, int, float]] = []
    slow = asyncio.create_task(send_burst(limiter, fake, "slow", 2, limits, log))
    others = [asyncio.create_task(send_burst(limiter, fake, f"c{i}", 1, limits, log)) for i in range(3)]
    await fake.run(slow, *others)
    # The slow chat's second message waits 100 s for its own key; the others go at once, 1/s.
    assert sorted(t for c, _, t in log if c != "slow") == [1.0, 2.0, 3.0]
    assert [t for c, _, t in log if c == "slow"] == [0.0, 100.0]


def test_idle_buckets_are_swept() -> None:
    now = [T0]
    limiter = RateLimiter(clock=lambda: now[0], sweep_every=10)
    for i in range(9):
        assert limiter.try_acquire([(f"k{i}", Limit(1.0))])
    now[0] = T0 + 100.0
    assert limiter.try_acquire([("last", Limit(1.0))])
    assert set(limiter._tat) == {"last"}


def test_limits_for_defaults_and_overrides() -> None:
    assert limits_for(ChannelType.TELEGRAM, Settings()) == ChannelLimits(Limit(30.0, 30.0), Limit(1.0, 1.0))
    assert limits_for(ChannelType.WHATSAPP, Settings()).per_channel == Limit(80.0, 80.0)
    assert limits_for(ChannelType.WHATSAPP, Settings()).per_chat.rate == pytest.approx(1 / 6)
    assert limits_for(ChannelType.SLACK, Settings()).per_chat.rate == 1.0
    tuned = Settings(rate_limits={"telegram": {"chat_rate": 5, "channel_burst": 50}})
    assert limits_for(ChannelType.TELEGRAM, tuned) == ChannelLimits(Limit(30.0, 50.0), Limit(5.0, 1.0))
    for channel_type in ChannelType:
        assert limits_for(channel_type) == DEFAULT_LIMITS[channel_type]


def test_block_after_picks_the_key_the_error_concerns() -> None:
    now = [T0]
    limiter = RateLimiter(clock=lambda: now[0])
    chat_keys = limiter.send_keys("wa1", "BSUID1", DEFAULT_LIMITS[ChannelType.WHATSAPP])
    other_keys = limiter.send_keys("wa1", "BSUID2", DEFAULT_LIMITS[ChannelType.WHATSAPP])
    limiter.block_after("wa1", "BSUID1", SendError("pair rate", code="131056", retryable=True, retry_after=6.0))
    assert limiter.delay(chat_keys) == 6.0
    assert limiter.delay(other_keys) == 0.0  # pair rate: only that recipient waits
    limiter.block_after("wa1", "BSUID1", SendError("throughput", code="130429", retryable=True, retry_after=2.0))
    assert limiter.delay(other_keys) == 2.0  # number-wide: every recipient waits
    limiter.block_after("wa1", "BSUID3", SendError("bad", code="131047"))
    assert limiter.delay(limiter.send_keys("wa1", "BSUID3", DEFAULT_LIMITS[ChannelType.WHATSAPP])) == 2.0


def test_chat_of_counts_what_the_platform_counts() -> None:
    def reply(channel_type: ChannelType, key: str, **reply_to: object) -> OutboundMessage:
        return OutboundMessage("o1", 0.0, "t", "c", channel_type, "conv", key, "hi", reply_to=dict(reply_to))

    assert RateLimiter.chat_of(reply(ChannelType.SLACK, "C1:1700.1", channel="C1", thread_ts="1700.1")) == "C1"
    assert RateLimiter.chat_of(reply(ChannelType.TELEGRAM, "-100:7", chat_id=-100, message_thread_id=7)) == "-100"
    assert RateLimiter.chat_of(reply(ChannelType.WHATSAPP, "US.1", to="1555")) == "US.1"


def test_every_limit_can_be_overridden_on_its_own() -> None:
    base = DEFAULT_LIMITS[ChannelType.SLACK]
    for key, expected in (
        ("channel_rate", ChannelLimits(Limit(7.0, base.per_channel.burst), base.per_chat)),
        ("channel_burst", ChannelLimits(Limit(base.per_channel.rate, 7.0), base.per_chat)),
        ("chat_rate", ChannelLimits(base.per_channel, Limit(7.0, base.per_chat.burst))),
        ("chat_burst", ChannelLimits(base.per_channel, Limit(base.per_chat.rate, 7.0))),
    ):
        assert limits_for(ChannelType.SLACK, Settings(rate_limits={"slack": {key: 7.0}})) == expected, key


def test_a_shorter_block_never_cuts_a_longer_one_short() -> None:
    now = [T0]
    limiter = RateLimiter(clock=lambda: now[0])
    keys = limiter.send_keys("bot1", "111", TELEGRAM)
    limiter.block_for(keys[1][0], 30.0)  # a flood wait of 30 s ...
    limiter.block_for(keys[1][0], 5.0)  # ... then a 429 with Retry-After 5 from an earlier send
    assert limiter.delay(keys) == 30.0


def test_only_slack_and_telegram_count_their_own_chat_key() -> None:
    def reply(channel_type: ChannelType, **reply_to: object) -> OutboundMessage:
        return OutboundMessage("o1", 0.0, "t", "c", channel_type, "conv", "US.1", "hi", reply_to=dict(reply_to))

    assert RateLimiter.chat_of(reply(ChannelType.WHATSAPP, channel="C1", chat_id=5)) == "US.1"
    assert RateLimiter.chat_of(reply(ChannelType.SLACK, chat_id=5)) == "US.1"  # a Slack reply without a channel
    assert RateLimiter.chat_of(reply(ChannelType.TELEGRAM, channel="C1")) == "US.1"


def test_a_sweep_drops_expired_blocks_and_keeps_live_ones() -> None:
    now = [T0]
    limiter = RateLimiter(clock=lambda: now[0], sweep_every=2)
    limiter.block_for("gone", 1.0)
    limiter.block_for("held", 100.0)
    now[0] = T0 + 10.0
    assert limiter.try_acquire([("a", Limit(1.0))])
    assert limiter.try_acquire([("b", Limit(1.0))])  # the second acquire sweeps
    assert set(limiter._blocked) == {"held"}
    assert limiter.delay([("held", Limit(1.0))]) == 90.0
    limiter.block_for("new", 5.0)  # and blocking still works after a sweep
    assert limiter.delay([("new", Limit(1.0))]) == 5.0
