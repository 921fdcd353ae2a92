"""Admin tasks behind the CLI: load a tenant file, print transcripts, rotate the master key,
list and replay dead letters."""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path
from typing import Any

import aio_pika
import asyncpg

from engine.bundle import BundleError, load_bundle, read_bundle, tenant_id
from engine.bus import Topology, copy_of, make_message
from engine.crypto import CredentialError, Vault
from engine.models import ConversationCommand
from engine.settings import Settings
from engine.store.pool import create_pool

log = logging.getLogger(__name__)

SELECT_TRANSCRIPTS = """
SELECT ch.type || ' ' || c.external_key AS conversation, ct.name, m.direction, m.text, m.created_at
FROM (SELECT * FROM conversations WHERE tenant_id = $1 ORDER BY last_message_at DESC LIMIT $2) c
JOIN channels ch ON ch.id = c.channel_id
JOIN channel_contacts ct ON ct.id = c.contact_id
JOIN message_history m ON m.conversation_id = c.id AND m.created_at >= to_timestamp($3)
ORDER BY 1, m.created_at, m.direction
"""
SELECT_CREDENTIALS = "SELECT id, credentials FROM channels WHERE credentials IS NOT NULL FOR UPDATE"
UPDATE_CREDENTIALS = "UPDATE channels SET credentials = $2, updated_at = now() WHERE id = $1"


async def load(settings: Settings, path: Path) -> int:
    try:
        bundle = read_bundle(path)
        vault = Vault(settings.master_key)
    except (BundleError, CredentialError, OSError, UnicodeDecodeError) as exc:
        print(f"engine load: {path}: {exc}", file=sys.stderr)
        return 2
    pool = await create_pool(settings.database_url)
    try:
        ids, warnings = await load_bundle(pool, vault, bundle)
    except BundleError as exc:
        print(f"engine load: {path}: {exc}", file=sys.stderr)
        return 2
    finally:
        await pool.close()
    for warning in warnings:
        print(f"warning: {warning}", file=sys.stderr)
    print(f"loaded tenant {bundle.tenant.slug} ({tenant_id(bundle.tenant.slug)})")
    for slug, cid in ids.items():
        kind = next(c.type.value for c in bundle.channels if c.slug == slug)
        print(f"  channel {slug}: POST /webhooks/{kind}/{cid}")
    return 0


async def transcripts(pool: asyncpg.Pool, tenant_slug: str, limit: int, since: float = 0.0) -> dict[str, list[str]]:
    """Messages of the tenant's most recent conversations (from `since`, a unix time), in order."""
    rows = await pool.fetch(SELECT_TRANSCRIPTS, tenant_id(tenant_slug), limit, since)
    out: dict[str, list[str]] = {}
    for r in rows:
        who = (r["name"] or "user") if r["direction"] == "inbound" else "bot"
        out.setdefault(r["conversation"], []).append(f"{who}: {r['text'] or ''}")
    return out


async def print_transcripts(settings: Settings, tenant_slug: str, limit: int) -> int:
    pool = await create_pool(settings.database_url)
    try:
        for key, lines in (await transcripts(pool, tenant_slug, limit)).items():
            print(f"--- conversation {key}")
            for line in lines:
                print(f"    {line}")
    finally:
        await pool.close()
    return 0


async def rotate_key(settings: Settings) -> int:
    vault = Vault(settings.master_key)
    pool = await create_pool(settings.database_url)
    try:
        async with pool.acquire() as conn, conn.transaction():
            rows = await conn.fetch(SELECT_CREDENTIALS)
            for row in rows:
                await conn.execute(UPDATE_CREDENTIALS, row["id"], vault.rotate(row["credentials"]))
    finally:
        await pool.close()
    print(f"re-encrypted the credentials of {len(rows)} channels under the first key")
    return 0


def _origin_and_reason(headers: dict[str, Any]) -> tuple[str, str]:
    """Where a dead letter came from and why: our own headers (worker), else the broker's x-death
    (a message the sender rejected)."""
    deaths = headers.get("x-death") or [{}]
    death = deaths[0] if isinstance(deaths, list) and deaths else {}
    origin = headers.get("x-queue") or death.get("queue") or ""
    reason = headers.get("x-reason") or death.get("reason") or "unknown"
    text = [v.decode() if isinstance(v, bytes) else str(v) for v in (origin, reason)]
    return text[0], text[1]


async def dead_letters(settings: Settings, replay: bool, limit: int) -> int:
    """List (or replay) up to `limit` dead letters. Listing leaves them where they are; replaying
    publishes each back to the queue it came from, then removes it from the dead-letter queue."""
    topology = Topology(settings.topology_prefix, settings.shards)
    connection = await aio_pika.connect(settings.amqp_url)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        queue = await channel.declare_queue(topology.dead, passive=True)
        shown = 0
        while shown < limit and (message := await queue.get(no_ack=False, fail=False)) is not None:
            shown += 1
            headers = dict(message.headers or {})
            origin, reason = _origin_and_reason(headers)
            print(f"{message.message_id or '-'}\t{origin}\t{reason}")
            if replay and origin:
                for name in ("x-reason", "x-queue", "x-attempts", "x-death"):
                    headers.pop(name, None)
                await channel.default_exchange.publish(copy_of(message, headers), routing_key=origin)
                await message.ack()
        # Messages listed but not replayed stay unacked until the channel closes: back in the queue.
    verb = "replayed" if replay else "listed"
    print(f"{verb} {shown} dead letter(s) from {topology.dead}", file=sys.stderr)
    return 0


SELECT_CONVERSATION = """
SELECT tenant_id::text, channel_id::text, external_key, status FROM conversations WHERE id = $1
"""


async def command_conversation(settings: Settings, conversation: str, action: str) -> int:
    """Send a handback/close command to the worker that owns the conversation (through its shard,
    so it applies in order with the conversation's messages)."""
    pool = await create_pool(settings.database_url)
    try:
        row = await pool.fetchrow(SELECT_CONVERSATION, conversation)
    except asyncpg.DataError:
        row = None
    finally:
        await pool.close()
    if row is None:
        print(f"engine conversation: no conversation {conversation}", file=sys.stderr)
        return 2
    command = ConversationCommand(row["channel_id"], row["tenant_id"], row["external_key"], action, time.time())
    topology = Topology(settings.topology_prefix, settings.shards)
    connection = await aio_pika.connect(settings.amqp_url)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        exchange = await channel.get_exchange(topology.inbound)
        shard = topology.shard_of(command.tenant_id, command.channel_id, command.conversation_key)
        message = make_message(
            command, message_id=f"{conversation}:{action}:{command.issued_at}", correlation_id=conversation
        )
        await exchange.publish(message, routing_key=str(shard))
    print(f"{action}: sent for conversation {conversation} (status was {row['status']})")
    return 0
