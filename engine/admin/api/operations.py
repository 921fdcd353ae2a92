"""Dead letters (the tenant's own, listed and replayed) and the audit log."""

from __future__ import annotations

from engine.admin.api.broker import BrokerUnavailable
from engine.admin.api.context import Call
from engine.admin.api.conversations import BROKER
from engine.admin.api.models import (
    AuditOut,
    AuditPage,
    AuditQuery,
    DeadLetterList,
    DeadLetterOut,
    DeadLetterQuery,
    decode_cursor,
    encode_cursor,
)
from engine.admin.api.routing import ApiError, Reply, Route, not_found
from engine.store import api_audit


async def list_dead_letters(call: Call) -> Reply:
    q: DeadLetterQuery = call.query
    try:
        letters = await call.request.app[BROKER].dead_letters(call.tenant_id, q.limit)
    except BrokerUnavailable as exc:
        raise ApiError(503, "unavailable", str(exc)) from None
    return Reply(DeadLetterList(items=[DeadLetterOut(**{s: getattr(d, s) for s in d.__slots__}) for d in letters]))


async def replay_dead_letter(call: Call) -> Reply:
    letter_id = call.id(what="dead letter")
    try:
        replayed = await call.request.app[BROKER].dead_letters(call.tenant_id, 1, replay=letter_id)
    except BrokerUnavailable as exc:
        raise ApiError(503, "unavailable", str(exc)) from None
    if not replayed:
        raise not_found("dead letter")
    async with call.db() as conn:
        await call.audit(conn, "replay", "dead-letters", letter_id, None, {"queue": replayed[0].queue})
    d = replayed[0]
    return Reply(DeadLetterOut(**{s: getattr(d, s) for s in d.__slots__}))


async def list_audit(call: Call) -> Reply:
    q: AuditQuery = call.query
    async with call.db() as conn:
        rows = await api_audit.page(conn, call.tenant_id, q.resource, decode_cursor(q.cursor), q.limit)
    items = [AuditOut(**dict(r)) for r in rows]
    cursor = encode_cursor(items[-1].created_at, items[-1].id) if len(items) == q.limit else None
    return Reply(AuditPage(items=items, next_cursor=cursor))


ROUTES = [
    Route("GET", "/dead-letters", list_dead_letters, "The tenant's messages set aside as poison", "operations",
          ("read",), query=DeadLetterQuery, response=DeadLetterList, errors=(503,)),
    Route("POST", "/dead-letters/{id}/replay", replay_dead_letter, "Send a dead letter back to its queue",
          "operations", ("write",), response=DeadLetterOut, errors=(404, 503)),
    Route("GET", "/audit-logs", list_audit, "Every write through the API, newest first", "operations", ("read",),
          query=AuditQuery, response=AuditPage),
]  # fmt: skip
