"""channel_webhooks: captured webhook requests (raw body bytes, the headers that matter, outcome).

Written in batches by the receiver's capture writer (engine.ingress.capture), read back in arrival
order by `engine loadtest export`. Day partitions are created ahead and dropped after the retention.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

INSERT_WEBHOOKS = """
INSERT INTO channel_webhooks (channel_id, tenant_id, channel_type, events, outcome, status, headers,
                              conversation_key, body, received_at)
SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::text[], $4::int[], $5::text[], $6::smallint[], $7::jsonb[],
                     $8::text[], $9::bytea[], $10::timestamptz[])
"""
ENSURE_PARTITIONS = "SELECT ensure_webhook_partitions($1)"
DROP_PARTITIONS = "SELECT drop_webhook_partitions($1)"
SELECT_CAPTURED = """
SELECT w.id, w.channel_id::text, coalesce(w.channel_type, c.type) AS channel_type, w.outcome, w.status, w.headers,
       w.conversation_key, w.body, w.received_at
FROM channel_webhooks w JOIN channels c ON c.id = w.channel_id
WHERE (c.id::text = $1 OR c.slug = $1) AND (w.received_at, w.id) > ($2, $6) AND w.received_at < $3
  AND w.body IS NOT NULL AND ($4::text[] IS NULL OR w.outcome = any($4::text[]))
ORDER BY w.received_at, w.id
LIMIT $5
"""


@dataclass(frozen=True, slots=True)
class CapturedWebhook:
    """One captured request, as received: body holds the exact bytes the platform signed."""

    channel_id: str
    tenant_id: str
    channel_type: str
    events: int
    outcome: str
    status: int
    headers: dict[str, str]
    conversation_key: str | None
    body: bytes
    received_at: datetime

    @classmethod
    def from_row(cls, row: asyncpg.Record) -> CapturedWebhook:
        return cls(
            channel_id=row["channel_id"],
            tenant_id="",
            channel_type=row["channel_type"],
            events=0,
            outcome=row["outcome"],
            status=row["status"],
            headers=row["headers"],
            conversation_key=row["conversation_key"],
            body=bytes(row["body"]),
            received_at=row["received_at"],
        )


async def insert_webhooks(conn: asyncpg.Connection | asyncpg.Pool, items: Sequence[CapturedWebhook]) -> None:
    """Write a batch in one round trip (not idempotent: every call adds rows)."""
    columns: list[list[Any]] = [[] for _ in range(10)]
    for w in items:
        values = (w.channel_id, w.tenant_id, w.channel_type, w.events, w.outcome, w.status, w.headers,
                  w.conversation_key, w.body, w.received_at)  # fmt: skip
        for column, value in zip(columns, values, strict=True):
            column.append(value)
    await conn.execute(INSERT_WEBHOOKS, *columns)


async def ensure_partitions(conn: asyncpg.Connection | asyncpg.Pool, days_ahead: int) -> None:
    await conn.execute(ENSURE_PARTITIONS, days_ahead)


async def drop_old_partitions(conn: asyncpg.Connection | asyncpg.Pool, keep_days: int) -> int:
    """Drop day partitions older than keep_days (and such rows in the default partition)."""
    return int(await conn.fetchval(DROP_PARTITIONS, keep_days))


async def iter_captured(
    conn: asyncpg.Connection,
    channel: str,
    since: datetime,
    until: datetime,
    outcomes: list[str] | None,
    limit: int,
    page: int = 1000,
) -> AsyncIterator[CapturedWebhook]:
    """Captured requests of one channel (id or slug) in arrival order, read page by page (keyset)."""
    done, after_time, after_id = 0, since, 0
    while done < limit:
        rows = await conn.fetch(
            SELECT_CAPTURED, channel, after_time, until, outcomes, min(page, limit - done), after_id
        )
        for row in rows:
            yield CapturedWebhook.from_row(row)
        done += len(rows)
        if len(rows) < min(page, limit - done + len(rows)):
            return
        after_time, after_id = rows[-1]["received_at"], rows[-1]["id"]
