"""Every API request, before its handler: body size, bearer token (401), scope (403), the token's
rate limit (429 + Retry-After), JSON and pydantic validation (422); errors as JSON with a log line."""

from __future__ import annotations

import logging
import math
import time
from collections import OrderedDict
from datetime import UTC, datetime
from typing import Any

import orjson
from aiohttp import web
from pydantic import BaseModel, ValidationError

from engine.admin.api.context import POOL, SETTINGS, Call, Principal, tenant_transaction
from engine.admin.api.routing import ApiError, Route, validation_problems
from engine.admin.tokens import TOKEN_PREFIX, digest
from engine.store import api_tokens

log = logging.getLogger(__name__)

MAX_BUCKETS = 100_000


class RateLimiter:
    """A token bucket per API token, in this process (each `engine serve` counts its own)."""

    def __init__(self, rate: float, burst: float) -> None:
        self.rate = rate
        self.burst = burst
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # token -> (level, at)

    def take(self, key: str, now: float | None = None) -> float:
        """0 if the request may go now, else the seconds until it may."""
        now = time.monotonic() if now is None else now
        level, at = self._buckets.pop(key, (self.burst, now))
        level = min(self.burst, level + (now - at) * self.rate)
        wait = 0.0
        if level >= 1:
            level -= 1
        else:
            wait = (1 - level) / self.rate
        self._buckets[key] = (level, now)
        if len(self._buckets) > MAX_BUCKETS:
            self._buckets.popitem(last=False)
        return wait


LIMITER = web.AppKey("api_limiter", RateLimiter)


async def authenticate(request: web.Request) -> Principal:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise ApiError(401, "unauthorized", "missing bearer token")
    token = token.strip()
    if not token.startswith(TOKEN_PREFIX) or len(token) > 200:
        raise ApiError(401, "unauthorized", "unknown token")
    async with tenant_transaction(request.app[POOL], None) as conn:
        row = await api_tokens.authenticate(conn, digest(token))
    if row is None:
        raise ApiError(401, "unauthorized", "unknown token")
    if row["revoked_at"] is not None:
        raise ApiError(401, "unauthorized", "token revoked")
    if row["expires_at"] is not None and row["expires_at"] <= datetime.now(UTC):
        raise ApiError(401, "unauthorized", "token expired")
    return Principal(row["id"], row["tenant_id"], frozenset(row["scopes"]), row["prefix"], row["name"])


def error_response(request: web.Request, exc: ApiError, principal: Principal | None = None) -> web.Response:
    level = logging.ERROR if exc.status >= 500 else logging.WARNING
    who = principal.prefix if principal else "-"
    log.log(level, "api %s %s: %d %s (%s) token=%s", request.method, request.path, exc.status, exc.code,
            exc.detail, who, extra={"action": "api", "status": exc.status})  # fmt: skip
    body: dict[str, Any] = {"error": exc.code, "detail": exc.detail}
    if exc.errors:
        body["errors"] = exc.errors
    headers = {"WWW-Authenticate": 'Bearer realm="engine"'} if exc.status == 401 else {}
    if exc.status == 429:
        headers["Retry-After"] = exc.errors[0]["message"] if exc.errors else "1"
        body.pop("errors", None)
    return web.json_response(body, status=exc.status, headers=headers, dumps=_dumps)


def _dumps(value: Any) -> str:
    return orjson.dumps(value, default=_default).decode()


def _default(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    raise TypeError(f"not JSON serializable: {type(value).__name__}")


async def _read_body(request: web.Request, route: Route) -> Any:
    limit = request.app[SETTINGS].api_max_body_bytes
    if (request.content_length or 0) > limit:
        raise ApiError(413, "too_large", f"body over {limit} bytes")
    raw = await request.content.read(limit + 1)
    if len(raw) > limit:
        raise ApiError(413, "too_large", f"body over {limit} bytes")
    if route.body is None:
        return None
    try:
        data = orjson.loads(raw) if raw else None
    except orjson.JSONDecodeError as exc:
        raise ApiError(400, "malformed", f"invalid JSON: {exc}") from None
    if route.validated_by_handler:
        if not isinstance(data, dict):
            raise ApiError(422, "invalid", "the body must be a JSON object", [{"path": "", "message": "not an object"}])
        return data
    try:
        return route.body.model_validate(data)
    except ValidationError as exc:
        raise validation_problems(exc) from None


def _query(request: web.Request, route: Route) -> Any:
    if route.query is None:
        return None
    try:
        return route.query.model_validate(dict(request.query))
    except ValidationError as exc:
        raise validation_problems(exc, "query.") from None


def make_handler(route: Route) -> Any:
    async def handle(request: web.Request) -> web.StreamResponse:
        principal = None
        try:
            principal = await authenticate(request)
            if not principal.scopes & set(route.scopes):
                raise ApiError(403, "forbidden", f"this token lacks the scope {' or '.join(route.scopes)}")
            wait = request.app[LIMITER].take(principal.token_id)
            if wait > 0:
                raise ApiError(
                    429, "rate_limited", "too many requests", [{"path": "", "message": str(math.ceil(wait))}]
                )
            call = Call(request, principal, dict(request.match_info), await _read_body(request, route))
            call.query = _query(request, route)
            reply = await route.handler(call)
        except ApiError as exc:
            return error_response(request, exc, principal)
        if reply.body is None:
            return web.Response(status=reply.status, headers=reply.headers)
        return web.json_response(reply.body, status=reply.status, headers=reply.headers, dumps=_dumps)

    handle.__name__ = route.handler.__name__
    return handle
