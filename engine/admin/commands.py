"""Operator tasks behind the CLI: load a tenant file, print transcripts, rotate the master key, list
and replay dead letters, send a command to a conversation."""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path
from typing import Any

import aio_pika

from engine.admin.environment import TenantEnvironment
from engine.admin.tenant_file import BundleError, load_bundle, read_bundle, tenant_id
from engine.bus.connection import copy_of, make_message
from engine.bus.consumer import ATTEMPT_HEADER, ORIGIN_HEADER, REASON_HEADER
from engine.bus.topology import Topology
from engine.crypto import CredentialError, Vault
from engine.models import ConversationCommand
from engine.settings import Settings
from engine.store import conversations, credentials, transcripts
from engine.store.credentials import check_master_key
from engine.store.pool import create_pool

log = logging.getLogger(__name__)


async def load(settings: Settings, path: Path, update: bool = False) -> int:
    try:
        env = TenantEnvironment.allowing(settings.tenant_env)
        bundle = read_bundle(path, env)
        Vault(settings.master_key)  # a missing or malformed key is refused before connecting
    except (BundleError, CredentialError, OSError, UnicodeDecodeError) as exc:
        print(f"engine load: {path}: {exc}", file=sys.stderr)
        return 2
    pool = await create_pool(settings.database_url)
    try:
        vault = await check_master_key(pool, settings.master_key)
        ids, warnings = await load_bundle(pool, vault, bundle, update=update, env=env)
    except (BundleError, CredentialError) as exc:
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
    if bundle.recovery is not None:
        print(
            f"  recovery events: POST /events/{bundle.tenant.slug} (Shopify: POST /events/{bundle.tenant.slug}/shopify)"
        )
    return 0


async def print_transcripts(settings: Settings, tenant_slug: str, limit: int) -> int:
    pool = await create_pool(settings.database_url)
    try:
        for key, lines in (await transcripts.transcripts(pool, tenant_id(tenant_slug), limit)).items():
            print(f"--- conversation {key}")
            for line in lines:
                print(f"    {line}")
    finally:
        await pool.close()
    return 0


async def rotate_key(settings: Settings) -> int:
    try:
        vault = Vault(settings.master_key)
    except CredentialError as exc:
        print(f"engine rotate-key: {exc}", file=sys.stderr)
        return 2
    pool = await create_pool(settings.database_url)
    try:
        counts = await credentials.rotate(pool, vault)
    except CredentialError as exc:
        print(f"engine rotate-key: {exc}", file=sys.stderr)
        return 2
    finally:
        await pool.close()
    print(
        f"re-encrypted under the first key: {counts['channels']} channel credentials, "
        f"{counts['tools']} tool secrets, {counts['canary']} key canary"
    )
    return 0


def _origin_and_reason(headers: dict[str, Any]) -> tuple[str, str]:
    """Where a dead letter came from and why (engine.bus.consumer writes both headers)."""
    text = [
        v.decode() if isinstance(v, bytes) else str(v)
        for v in (headers.get(ORIGIN_HEADER) or "", headers.get(REASON_HEADER) or "unknown")
    ]
    return text[0], text[1]


async def dead_letters(settings: Settings, replay: bool, limit: int) -> int:
    """List (or replay) up to `limit` dead letters. Listing leaves them where they are; replaying
    publishes each back to the queue it came from, then removes it from the dead-letter queue."""
    topology = Topology.of(settings)
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
                for name in (REASON_HEADER, ORIGIN_HEADER, ATTEMPT_HEADER):
                    headers.pop(name, None)
                await channel.default_exchange.publish(copy_of(message, headers), routing_key=origin)
                await message.ack()
        # Messages listed but not replayed stay unacked until the channel closes: back in the queue.
    verb = "replayed" if replay else "listed"
    print(f"{verb} {shown} dead letter(s) from {topology.dead}", file=sys.stderr)
    return 0


async def command_conversation(settings: Settings, conversation: str, action: str) -> int:
    """Send a handback/close command to the worker that owns the conversation (through its shard,
    so it applies in order with the conversation's messages)."""
    pool = await create_pool(settings.database_url)
    try:
        row = await conversations.find(pool, conversation)
    finally:
        await pool.close()
    if row is None:
        print(f"engine conversation: no conversation {conversation}", file=sys.stderr)
        return 2
    command = ConversationCommand(row.channel_id, row.tenant_id, row.external_key, action, time.time())
    topology = Topology.of(settings)
    connection = await aio_pika.connect(settings.amqp_url)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        exchange = await channel.get_exchange(topology.inbound)
        shard = topology.shard_of(command.tenant_id, command.channel_id, command.conversation_key)
        message = make_message(
            command, message_id=f"{conversation}:{action}:{command.issued_at}", correlation_id=conversation
        )
        await exchange.publish(message, routing_key=str(shard))
    print(f"{action}: sent for conversation {conversation} (status was {row.status})")
    return 0


async def recovery_report(settings: Settings, tenant: str, campaign: str | None, since: str | None) -> int:
    """`engine recovery report`: the funnel per campaign (engine.recovery.report)."""
    from engine.recovery.report import format_funnel, funnel, parse_since

    try:
        start = parse_since(since)
    except ValueError:
        print(f"--since: expected YYYY-MM-DD or Nd, got {since!r}", file=sys.stderr)
        return 2
    pool = await create_pool(settings.database_url)
    try:
        rows = await funnel(pool, tenant, campaign, start)
    finally:
        await pool.close()
    if rows is None:
        print(f"no tenant {tenant!r}", file=sys.stderr)
        return 1
    print(f"recovery funnel of {tenant} since {start.isoformat()}")
    for line in format_funnel(rows):
        print(line)
    return 0
