"""Retry policy for outbound HTTP (platform send APIs): one place, tenacity underneath.

Retry only what the platform says may succeed later (SendError.retryable); wait what it asks for
(Retry-After, Telegram's retry_after) or else back off exponentially with jitter; stop after N.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, stop_after_attempt
from tenacity.wait import wait_exponential_jitter

from engine.models import SendError

T = TypeVar("T")
MAX_WAIT = 30.0  # never sleep longer than this on one retry, whatever the platform asks
_backoff = wait_exponential_jitter(multiplier=0.2, max=MAX_WAIT, jitter=0.5)


def _retryable(exc: BaseException) -> bool:
    return isinstance(exc, SendError) and exc.retryable


def _wait(state: RetryCallState) -> float:
    exc = state.outcome.exception() if state.outcome else None
    if isinstance(exc, SendError) and exc.retry_after is not None:
        return min(exc.retry_after, MAX_WAIT)
    return _backoff(state)


async def with_retries(
    attempt: Callable[[bool], Awaitable[T]],
    attempts: int,
    *,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,  # tests record the waits instead
) -> T:
    """attempt(retrying), retried up to `attempts` times in all. Most sends succeed at once, and
    tenacity's bookkeeping costs more than a send's own Python code, so the first attempt runs outside
    it; only a retryable failure enters tenacity, as the outcome of its first attempt, so the waits and
    the count of attempts are tenacity's. retrying is False for the first attempt only."""
    try:
        return await attempt(False)
    except SendError as exc:
        if not exc.retryable or attempts <= 1:
            raise
        first: SendError | None = exc

    async def again() -> T:
        nonlocal first
        if first is not None:
            failed, first = first, None
            raise failed
        return await attempt(True)

    policy = AsyncRetrying(
        retry=retry_if_exception(_retryable), wait=_wait, stop=stop_after_attempt(attempts), reraise=True, sleep=sleep
    )
    return await policy(again)
