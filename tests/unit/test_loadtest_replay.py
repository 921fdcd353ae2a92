"""The replayer on a virtual clock: timing, per-conversation order, closed loop, retries."""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from engine.loadtest.records import Record
from engine.loadtest.replay import Replayer, ReplayOptions
from engine.loadtest.schedule import Options, Planned, plan, rate_due
from engine.loadtest.sink import ReplyMatcher
from engine.loadtest.stats import Stats
from engine.loadtest.targets import Target

TARGETS = {"telegram": Target("telegram", "c1", None, {"secret_token": "s"})}


class VirtualClock:
    """Time moves only when every task is waiting on it: then it jumps to the next wake-up."""

    def __init__(self) -> None:
        self.time = 0.0
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._order = itertools.count()

    def now(self) -> float:
        return self.time

    async def sleep(self, seconds: float) -> None:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (self.time + max(seconds, 0.0), next(self._order), future))
        await future

    async def run(self, coro: Awaitable[None]) -> None:
        task = asyncio.ensure_future(coro)
        for _ in range(100_000):
            for _ in range(20):  # let every runnable task reach its next wait
                await asyncio.sleep(0)
            if task.done():
                return task.result()
            if self._sleepers:
                wake, _, future = heapq.heappop(self._sleepers)
                self.time = max(self.time, wake)
                future.set_result(None)
        raise AssertionError("virtual run did not finish")


def update(n: int, chat: int) -> bytes:
    return (
        f'{{"update_id": {n}, "message": {{"message_id": {n}, "date": 1, "text": "m{n}", '
        f'"from": {{"id": {chat}}}, "chat": {{"id": {chat}, "type": "private"}}}}}}'
    ).encode()


def records(spec: list[tuple[float, int]]) -> list[Record]:
    return [Record(t, "telegram", str(chat), update(n, chat)) for n, (t, chat) in enumerate(spec, 1)]


def chat_of(item: Planned) -> str:
    return item.conversation.split(":")[1]


Sent = list[tuple[str, int, float]]


def fake_send(
    clock: VirtualClock, sent: Sent, service: Callable[[Planned, int], float] = lambda i, a: 0.01,
    status: Callable[[Planned, int], int] = lambda i, a: 200,
) -> Callable[[Planned, int], Awaitable[int]]:  # fmt: skip
    async def send(item: Planned, attempt: int) -> int:
        sent.append((chat_of(item), item.seq, clock.now()))
        await clock.sleep(service(item, attempt))
        return status(item, attempt)

    return send


async def replay(items: list[Planned], send: Any, clock: VirtualClock, options: ReplayOptions, **kw: Any) -> Stats:
    stats = Stats()
    await clock.run(Replayer(items, send, clock, stats, options, **kw).run(start=0.0))
    return stats


async def test_open_loop_keeps_the_recorded_timing_at_10x() -> None:
    clock, sent = VirtualClock(), list[tuple[str, int, float]]()
    items = plan(records([(0.0, 1), (0.5, 2), (1.0, 1), (1.5, 2), (2.0, 1)]), TARGETS, Options(speed=10))
    stats = await replay(items, fake_send(clock, sent), clock, ReplayOptions())
    assert [round(t, 9) for _, _, t in sent] == [0.0, 0.05, 0.1, 0.15, 0.2]
    assert (stats.sent, stats.ok, stats.failed) == (5, 5, 0)
    assert stats.ack.percentile(100) == pytest.approx(10.0, rel=0.01)  # the 10 ms service time, in ms


async def test_a_conversation_waits_for_its_previous_answer_and_latency_counts_from_the_due_time() -> None:
    clock, sent = VirtualClock(), list[tuple[str, int, float]]()
    items = plan(records([(0.0, 1), (0.1, 1), (0.2, 2)]), TARGETS, Options())
    slow_first = fake_send(clock, sent, service=lambda item, a: 1.0 if item.seq == 0 else 0.01)
    stats = await replay(items, slow_first, clock, ReplayOptions())
    by_chat: dict[str, list[tuple[int, float]]] = {}
    for chat, seq, at in sent:
        by_chat.setdefault(chat, []).append((seq, round(at, 9)))
    # Chat 1's second message (due at 0.1) goes only once the first was answered (at 1.0);
    # chat 2 is not held up by chat 1.
    assert by_chat == {"1": [(0, 0.0), (1, 1.0)], "2": [(2, 0.2)]}
    # Its ack latency runs from its due time 0.1 to 1.01: 910 ms, not the 10 ms of its own call.
    assert stats.ack.percentile(100) == pytest.approx(1000.0, rel=0.01)
    assert stats.ack.percentile(50) == pytest.approx(910.0, rel=0.01)
    # Each was taken up at its due time: waiting for the previous answer is the target's, not late.
    assert (stats.late.count, stats.late.percentile(100)) == (3, pytest.approx(0.001, abs=0.001))


async def test_open_loop_counts_how_late_the_load_tester_itself_took_a_request_up() -> None:
    clock, sent = VirtualClock(), list[tuple[str, int, float]]()
    items = plan(records([(0.0, 1), (0.1, 2), (0.2, 3)]), TARGETS, Options())
    stats = Stats()
    replayer = Replayer(items, fake_send(clock, sent), clock, stats, ReplayOptions())
    # The run's start was 300 ms before the replayer got to its first request (its loop was busy):
    # all three were due before it looked, and each counts as late by what it waited.
    await clock.run(replayer.run(start=-0.3))
    assert [round(t, 9) for _, _, t in sent] == [0.0, 0.0, 0.0]
    late = [stats.late.percentile(p) for p in (0, 50, 100)]
    assert late == [pytest.approx(100.0, rel=0.01), pytest.approx(200.0, rel=0.01), pytest.approx(300.0, rel=0.01)]


async def test_rate_mode_spaces_requests_evenly_with_a_linear_ramp() -> None:
    assert [rate_due(i, 10.0, 0.0) for i in range(3)] == [0.0, 0.1, 0.2]
    # Ramp 2 s to 10/s: 10 requests during the ramp (rate * ramp / 2), then one every 0.1 s.
    assert rate_due(0, 10.0, 2.0) == 0.0
    assert rate_due(10, 10.0, 2.0) == pytest.approx(2.0)
    assert rate_due(11, 10.0, 2.0) == pytest.approx(2.1)
    dues = [rate_due(i, 10.0, 2.0) for i in range(10)]
    assert dues == sorted(dues) and dues[1] - dues[0] > dues[9] - dues[8]  # faster and faster
    clock, sent = VirtualClock(), list[tuple[str, int, float]]()
    items = plan(records([(5.0 * i, i % 3) for i in range(6)]), TARGETS, Options(rate=4.0))
    await replay(items, fake_send(clock, sent), clock, ReplayOptions())
    assert [round(t, 9) for _, _, t in sent] == [0.0, 0.25, 0.5, 0.75, 1.0, 1.25]


async def test_duration_and_max_requests_bound_the_plan() -> None:
    spec = [(float(i), i) for i in range(10)]
    assert len(plan(records(spec), TARGETS, Options(duration=4.5))) == 5
    assert len(plan(records(spec), TARGETS, Options(max_requests=3))) == 3
    assert len(plan(records(spec), TARGETS, Options(copies=3))) == 30


async def test_closed_loop_uses_n_connections_and_keeps_each_conversation_in_order() -> None:
    clock, sent = VirtualClock(), list[tuple[str, int, float]]()
    in_flight, peak = 0, 0

    async def send(item: Planned, attempt: int) -> int:
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        sent.append((chat_of(item), item.seq, clock.now()))
        await clock.sleep(0.1)
        in_flight -= 1
        return 200

    spec = [(float(i), i % 3) for i in range(12)]  # 3 conversations x 4 messages
    items = plan(records(spec), TARGETS, Options())
    stats = await replay(items, send, clock, ReplayOptions(connections=2))
    assert peak == 2 and stats.ok == 12
    for chat in ("0", "1", "2"):
        seqs = [seq for c, seq, _ in sent if c == chat]
        assert seqs == sorted(seqs) and len(seqs) == 4
    assert clock.now() == pytest.approx(0.6)  # 12 requests, 2 at a time, 0.1 s each


async def test_closed_loop_duration_stops_new_requests() -> None:
    clock, sent = VirtualClock(), list[tuple[str, int, float]]()
    items = plan(records([(float(i), i) for i in range(100)]), TARGETS, Options())
    stats = await replay(items, fake_send(clock, sent, service=lambda i, a: 0.125), clock,
                         ReplayOptions(connections=1, duration=1.0))  # fmt: skip
    assert stats.sent == 8  # at 0, 0.125, ... 0.875; none at 1.0


async def test_non_200_is_retried_with_backoff_and_counted() -> None:
    clock, sent = VirtualClock(), list[tuple[str, int, float]]()
    items = plan(records([(0.0, 1)]), TARGETS, Options())
    flaky = fake_send(clock, sent, service=lambda i, a: 0.0, status=lambda i, attempt: 200 if attempt == 2 else 503)
    stats = await replay(items, flaky, clock, ReplayOptions(retries=3, backoff=1.0))
    assert [round(t, 9) for _, _, t in sent] == [0.0, 1.0, 3.0]  # back-off 1 s, then 2 s
    assert stats.statuses == {"503": 2, "200": 1}
    assert (stats.retries, stats.ok, stats.failed) == (2, 1, 0)


async def test_a_request_never_accepted_fails_and_owes_no_reply() -> None:
    clock, sent = VirtualClock(), list[tuple[str, int, float]]()
    items = plan(records([(0.0, 1)]), TARGETS, Options())
    stats = Stats()
    matcher = ReplyMatcher(stats, clock.now, 0.0)
    down = fake_send(clock, sent, service=lambda i, a: 0.0, status=lambda i, a: 0)
    await clock.run(Replayer(items, down, clock, stats, ReplayOptions(retries=2, backoff=0.5), matcher).run(0.0))
    assert (len(sent), stats.failed, stats.retries, stats.statuses["error"]) == (3, 1, 2, 3)
    assert (matcher.outstanding, stats.expected_replies) == (0, 0)


async def test_replies_are_matched_per_chat_in_order_and_extra_ones_are_duplicates() -> None:
    clock = VirtualClock()
    stats = Stats()
    matcher = ReplyMatcher(stats, clock.now, 0.0)
    matcher.expect("telegram", "1", 0.0, 1)
    matcher.expect("telegram", "1", 0.5, 1)
    matcher.expect("instagram", "9", 0.0, 1)
    clock.time = 1.0
    matcher.reply("telegram", "1")
    matcher.reply("messenger", "9")  # Instagram replies go through the Messenger send API
    clock.time = 1.25
    matcher.reply("telegram", "1")
    matcher.reply("telegram", "1")  # nobody owed this one
    matcher.reply("telegram", "777")  # a chat this run never wrote to
    assert (stats.matched, stats.duplicated, stats.unmatched, matcher.outstanding) == (3, 1, 1, 0)
    assert stats.e2e.percentile(100) == pytest.approx(1000.0, rel=0.01)
    assert stats.e2e.percentile(0) == pytest.approx(750.0, rel=0.01)  # due 0.5, answered 1.25
    assert set(stats.e2e_by_platform) == {"telegram", "instagram"}
