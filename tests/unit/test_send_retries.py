"""with_retries: the first attempt outside tenacity must not change what the policy does."""

from __future__ import annotations

import pytest

from engine.models import SendError
from engine.outbound.retry import with_retries


class Platform:
    """Answers each attempt with the next scripted outcome (an error to raise, or a result)."""

    def __init__(self, *outcomes: SendError | str) -> None:
        self.outcomes = list(outcomes)
        self.calls: list[bool] = []  # each attempt's retrying flag

    async def attempt(self, retrying: bool) -> str:
        self.calls.append(retrying)
        outcome = self.outcomes.pop(0)
        if isinstance(outcome, SendError):
            raise outcome
        return outcome


def busy(retry_after: float | None = None) -> SendError:
    return SendError("busy", code="429", retryable=True, retry_after=retry_after)


async def record_sleep(waits: list[float], seconds: float) -> None:
    waits.append(seconds)


async def test_a_send_that_succeeds_at_once_is_attempted_once() -> None:
    platform = Platform("id-1")
    assert await with_retries(platform.attempt, 5) == "id-1"
    assert platform.calls == [False]


async def test_retryable_failures_are_retried_waiting_what_each_failure_asks() -> None:
    platform = Platform(busy(retry_after=3), busy(retry_after=7), "id-1")
    waits: list[float] = []
    result = await with_retries(platform.attempt, 5, sleep=lambda s: record_sleep(waits, s))
    assert result == "id-1"
    assert platform.calls == [False, True, True]
    assert waits == [3, 7]  # the first wait is the first failure's own Retry-After


async def test_the_attempts_stop_at_the_limit_counting_the_first() -> None:
    platform = Platform(*[busy(retry_after=0) for _ in range(6)])
    with pytest.raises(SendError, match="busy"):
        await with_retries(platform.attempt, 3)
    assert platform.calls == [False, True, True]


async def test_a_permanent_failure_is_not_retried() -> None:
    platform = Platform(SendError("forbidden", code="403", retryable=False), "never")
    with pytest.raises(SendError, match="forbidden"):
        await with_retries(platform.attempt, 5)
    assert platform.calls == [False]


async def test_a_permanent_failure_after_a_retry_ends_the_retries() -> None:
    platform = Platform(busy(retry_after=0), SendError("gone", code="400", retryable=False), "never")
    with pytest.raises(SendError, match="gone"):
        await with_retries(platform.attempt, 5)
    assert platform.calls == [False, True]
