"""One HTTP tool call: render the templates, send with an Idempotency-Key, retry what is transient.

Transient: connect errors, 5xx, and 429 (waiting its Retry-After when it gives one, up to the tool's
max_retry_after; a longer wait fails the call rather than stall the conversation). A timeout is
per attempt and is not retried: the request may have had its effect, and the conversation waits.
The key is derived from the inbound event and the flow step, so a redelivered message re-sends the
same key and a tool that honours it does not repeat a side effect.

Guards (docs/security.md): the session must be engine.brain.tools.egress's (no loopback, private or
metadata address unless the operator allows it); redirects are followed here, hop by hop, at most
MAX_REDIRECTS, each hop through the same guard, and never to another origin while the request carries
one of the tool's secrets; the response is read in chunks and refused past max_response_bytes;
U+0000 is removed from it; every secret value is replaced by *** in what is stored or handed to the
flow (excerpts, errors, the parsed value); an error text never carries the URL's path or query; a
header with CR/LF is the tool's error, not an exception.
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
from yarl import URL

from engine import sanitize
from engine.brain.flows.templates import lookup, render, render_value, text_of
from engine.brain.tools.egress import EgressRefused, GuardedConnector
from engine.brain.tools.tool_models import HttpTool

EXCERPT = 2000  # characters of a request or response body kept in tool_executions
MAX_RESPONSE_BYTES = 1 << 20  # a tool's answer is refused past this (read while streaming)
MAX_REDIRECTS = 5
REDIRECTS = frozenset({301, 302, 303, 307, 308})
_CHUNK = 64 * 1024
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


class Refused(Exception):
    """The call is not made (or not followed further): a guard said no. The message is safe to store."""


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


def _origin(url: URL) -> tuple[str, str, int | None]:
    return (url.scheme, url.host or "", url.port)


def _where(url: str | URL) -> str:
    """scheme://host:port of a URL, for error texts: never its path or query (they may hold secrets)."""
    try:
        u = URL(str(url))
        return f"{u.scheme}://{u.host}:{u.port}" if u.host else "an invalid URL"
    except (ValueError, TypeError):
        return "an invalid URL"


def _check_headers(headers: dict[str, str]) -> None:
    for name, value in headers.items():
        if any(c in f"{name}{value}" for c in "\r\n\x00"):
            raise Refused(f"header {name[:40]!r}: contains CR, LF or NUL")


async def _read_capped(resp: aiohttp.ClientResponse, limit: int) -> str:
    data = bytearray()
    async for chunk in resp.content.iter_chunked(_CHUNK):
        data += chunk
        if len(data) > limit:
            raise Refused(f"response larger than {limit} bytes")
    return data.decode(resp.get_encoding() if resp.charset else "utf-8", errors="replace").replace("\x00", "")


async def _send(
    session: aiohttp.ClientSession, req: dict[str, Any], seconds: float, carries_secret: bool, limit: int
) -> tuple[int, Any]:
    """One attempt: the request and the redirects it leads to, each hop through the session's guard."""
    method, url, body = req["method"], URL(req["url"]), req["body"]
    params: dict[str, str] | None = req["query"] or None
    first = _origin(url)
    async with asyncio.timeout(seconds):
        for _hop in range(MAX_REDIRECTS + 1):
            async with session.request(
                method, url, headers=req["headers"], params=params, json=body, allow_redirects=False
            ) as resp:
                location = resp.headers.get("Location")
                if resp.status in REDIRECTS and location:
                    url = resp.url.join(URL(location))
                    if url.scheme not in ("http", "https"):
                        raise Refused(f"redirect to a {url.scheme or 'relative'} URL refused")
                    if carries_secret and _origin(url) != first:
                        where = _where(url)
                        raise Refused(f"redirect to another origin ({where}) refused: the request carries a secret")
                    if resp.status == 303 or (resp.status in (301, 302) and method != "HEAD"):
                        method, body = "GET", None  # what browsers do; 307/308 keep method and body
                    params = None  # the Location is the whole next URL
                    continue
                text = await _read_capped(resp, limit)
                if resp.status == 429 or resp.status >= 500:
                    raise Transient(resp.status, retry_after(resp.headers.get("Retry-After")), text)
                try:
                    value = orjson.loads(text) if text else None
                except orjson.JSONDecodeError:
                    value = text
                return resp.status, value
        raise Refused(f"more than {MAX_REDIRECTS} redirects")


def _secrets_used(tool: HttpTool) -> list[str]:
    """The tool's secret values, and their percent-encoded forms (how a URL template carries them)."""
    values = [v for v in tool.secrets.values() if v]
    return values + [q for v in values if (q := quote(v, safe="")) != v]


def _carries(req: dict[str, Any], secrets: list[str]) -> bool:
    """Whether a secret value is anywhere in the request as it will be sent."""
    sent = orjson.dumps(req, default=str).decode()
    return any(orjson.dumps(s).decode()[1:-1] in sent for s in secrets)


async def call_http(
    session: aiohttp.ClientSession,
    tool: HttpTool,
    args: dict[str, Any],
    idempotency_key: str,
    max_response_bytes: int = MAX_RESPONSE_BYTES,
) -> CallResult:
    """Never raises for a failed call: the failure is in the result (status, error)."""
    secrets = _secrets_used(tool)
    shown = _render(tool, args, redact=True)
    shown["body"] = excerpt(sanitize.redact(shown["body"], secrets))
    shown = sanitize.redact(shown, secrets)  # a secret typed into an argument is still a secret
    attempts = 0
    started = time.perf_counter()

    def done(status: str, response: dict[str, Any] | None, error: str | None, value: Any = None) -> CallResult:
        ms = (time.perf_counter() - started) * 1000
        clean = sanitize.redact(_storable(value, EXCERPT * 1000), secrets)
        response = sanitize.redact(_storable(response, EXCERPT * 10), secrets) if response else response
        return CallResult(status, attempts, ms, shown, response, sanitize.redact(error, secrets), clean)

    if not isinstance(session.connector, GuardedConnector):
        return done("error", None, "tools need the guarded HTTP session (engine.brain.tools.egress)")
    try:
        req = _render(tool, args, redact=False)
        req["headers"]["Idempotency-Key"] = idempotency_key
        _check_headers(req["headers"])
        async for attempt in _policy(tool):
            with attempt:
                attempts += 1
                status, value = await _send(session, req, tool.timeout, _carries(req, secrets), max_response_bytes)
    except TimeoutError:
        return done("timeout", None, f"no answer within {tool.timeout:g}s")
    except Transient as exc:
        return done("error", {"status": exc.status, "body": excerpt(exc.body)}, f"HTTP {exc.status}")
    except (Refused, EgressRefused) as exc:
        return done("error", None, f"refused: {exc}")
    except (aiohttp.ClientError, ValueError) as exc:
        # aiohttp's own texts carry the whole URL, query included: say what failed and where, only.
        return done("error", None, f"{type(exc).__name__} ({_where(_url_of(tool, args))})")
    response = {"status": status, "body": excerpt(value)}
    if status >= 400:
        return done("error", response, f"HTTP {status}")
    return done("ok", response, None, value)


def _storable(value: Any, limit: int) -> Any:
    """U+0000 removed, strings capped; a value nested too deep is replaced by a marker."""
    try:
        return sanitize.scrub(value, limit)
    except sanitize.TooDeep as exc:
        return {"refused": str(exc)}


def _url_of(tool: HttpTool, args: dict[str, Any]) -> str:
    try:
        return str(_render(tool, args, redact=True)["url"])
    except Exception:  # a template that cannot render: no URL to show
        return ""
