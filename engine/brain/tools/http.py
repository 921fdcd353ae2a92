"""One HTTP tool call: render the templates, send with an Idempotency-Key, retry what is transient.

Transient: connect errors, 5xx, and 429 (waiting its Retry-After when it gives one, up to the tool's
max_retry_after; a longer wait fails the call rather than stall the conversation). A timeout is
per attempt and is not retried: the request may have had its effect, and the conversation waits.
The key is derived from the inbound event and the flow step, so a redelivered message re-sends the
same key and a tool that honours it does not repeat a side effect.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import quote

import aiohttp
import orjson
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, stop_after_attempt
from tenacity.wait import wait_exponential_jitter

from engine.brain.flows.templates import lookup, render, render_value, text_of
from engine.brain.tools.tool_models import HttpTool

EXCERPT = 2000  # characters of a request or response body kept in tool_executions
_backoff = wait_exponential_jitter(multiplier=0.1, max=2.0, jitter=0.1)


@dataclass(slots=True)
class CallResult:
    status: str  # ok | error | timeout
    attempts: int
    duration_ms: float
    request: dict[str, Any]
    response: dict[str, Any] | None
    error: str | None
    value: Any = None  # the parsed response body


class Transient(Exception):
    def __init__(self, status: int, retry_after: float | None, body: str) -> None:
        super().__init__(f"HTTP {status}")
        self.status = status
        self.retry_after = retry_after
        self.body = body


def excerpt(value: Any) -> Any:
    """A value small enough for a jsonb column: as is, or its first EXCERPT characters."""
    text = value if isinstance(value, str) else orjson.dumps(value, default=str).decode()
    if len(text) <= EXCERPT:
        return value
    return {"truncated": True, "text": text[:EXCERPT]}


def retry_after(header: str | None) -> float | None:
    if not header:
        return None
    try:
        return max(0.0, float(header))
    except ValueError:
        try:
            return max(0.0, parsedate_to_datetime(header).timestamp() - time.time())
        except (TypeError, ValueError):
            return None


def _resolver(args: dict[str, Any], secrets: dict[str, str], redact: bool) -> Any:
    def resolve(path: tuple[str, ...]) -> Any:
        if path[0] == "secret":
            return "***" if redact else secrets.get(path[1]) if len(path) == 2 else None
        return lookup(args, path)

    return resolve


def _render(tool: HttpTool, args: dict[str, Any], redact: bool) -> dict[str, Any]:
    resolve = _resolver(args, tool.secrets, redact)
    return {
        "method": tool.method,
        "url": render(tool.url, resolve, escape=(lambda s: quote(s, safe="")) if tool.escape_url else None),
        "headers": {k: render(v, resolve) for k, v in tool.headers.items()},
        "query": {k: text_of(render_value(v, resolve)) for k, v in tool.query.items()},
        "body": render_value(tool.body, resolve) if tool.body is not None else None,
    }


def _policy(tool: HttpTool) -> AsyncRetrying:
    def retryable(exc: BaseException) -> bool:
        if isinstance(exc, Transient):
            return exc.retry_after is None or exc.retry_after <= tool.max_retry_after
        return isinstance(exc, aiohttp.ClientConnectionError) and not isinstance(exc, TimeoutError)

    def wait(state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        if isinstance(exc, Transient) and exc.retry_after is not None:
            return exc.retry_after
        return _backoff(state)

    return AsyncRetrying(
        retry=retry_if_exception(retryable), wait=wait, stop=stop_after_attempt(tool.retries + 1), reraise=True
    )


async def _send(session: aiohttp.ClientSession, req: dict[str, Any], seconds: float) -> tuple[int, Any]:
    async with asyncio.timeout(seconds):
        async with session.request(
            req["method"], req["url"], headers=req["headers"], params=req["query"] or None, json=req["body"]
        ) as resp:
            text = await resp.text()
            if resp.status == 429 or resp.status >= 500:
                raise Transient(resp.status, retry_after(resp.headers.get("Retry-After")), text)
            try:
                value = orjson.loads(text) if text else None
            except orjson.JSONDecodeError:
                value = text
            return resp.status, value


async def call_http(
    session: aiohttp.ClientSession, tool: HttpTool, args: dict[str, Any], idempotency_key: str
) -> CallResult:
    """Never raises for a failed call: the failure is in the result (status, error)."""
    req = _render(tool, args, redact=False)
    req["headers"]["Idempotency-Key"] = idempotency_key
    shown = _render(tool, args, redact=True)
    shown["body"] = excerpt(shown["body"])
    attempts = 0
    started = time.perf_counter()

    def done(status: str, response: dict[str, Any] | None, error: str | None, value: Any = None) -> CallResult:
        ms = (time.perf_counter() - started) * 1000
        return CallResult(status, attempts, ms, shown, response, error, value)

    try:
        async for attempt in _policy(tool):
            with attempt:
                attempts += 1
                status, value = await _send(session, req, tool.timeout)
    except TimeoutError:
        return done("timeout", None, f"no answer within {tool.timeout:g}s")
    except Transient as exc:
        return done("error", {"status": exc.status, "body": excerpt(exc.body)}, f"HTTP {exc.status}")
    except aiohttp.ClientError as exc:
        return done("error", None, f"{type(exc).__name__}: {exc}")
    response = {"status": status, "body": excerpt(value)}
    if status >= 400:
        return done("error", response, f"HTTP {status}")
    return done("ok", response, None, value)
