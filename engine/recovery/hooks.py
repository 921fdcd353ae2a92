"""The worker's and the sender's small hooks into recovery.

Worker: every inbound message stages (contact, time) so that the flush marks the latest recovery
message sent to that contact replied; a STOP word (the tenant's languages' defaults plus its own)
stages a marketing opt-out, a START word an opt-in, and WhatsApp's user_preferences webhook arrives
as a `marketing_stop` / `marketing_resume` command. A `recovery_flow` command (published by the
scheduler with a step that has reply_flow) parks the conversation at that flow's ask node, so the
contact's reply is that node's answer. All of it is written in the worker's batch transaction.

Sender: a recovery message's send outcome is copied onto its step; WhatsApp 131047 (outside the
24 h window) fails it as `outside_window`, 131049 (the per-user marketing cap) puts it back to
pending for later, a bounded number of times.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import asyncpg

from engine.brain.routing.text import WORD, fold
from engine.models import Contact, Conversation, ConversationCommand, InboundEvent, MessageType, OutboundMessage
from engine.settings import Settings
from engine.store import recovery as sql
from engine.store.messages import EventKey, FlushRows

if TYPE_CHECKING:
    from engine.brain.compiled_tenant import TenantState

ACTIONS = ("recovery_flow", "marketing_stop", "marketing_resume")
WORDS_TTL = 10.0  # seconds a worker trusts its copy of a tenant's stop words
MAX_WORDS = 4  # only short messages can be a STOP (a sentence that mentions "stop" is not one)


class StopWords:
    """Per-tenant STOP / START words, cached (one query per tenant per WORDS_TTL, not per message)."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool
        self._cache: dict[str, tuple[float, frozenset[str], frozenset[str], str | None]] = {}

    async def verdict(self, event: InboundEvent) -> tuple[bool, str | None] | None:
        """(opted out?, the reply to send) if the message is a STOP or START word, else None."""
        if event.type is not MessageType.TEXT or not event.text:
            return None
        words = WORD.findall(fold(event.text))
        if not words or len(words) > MAX_WORDS:
            return None
        phrase = " ".join(words)
        cached = self._cache.get(event.tenant_id)
        if cached is None or cached[0] < time.monotonic():
            row = await self._pool.fetchrow(sql.SELECT_STOP_WORDS, event.tenant_id)
            stop = frozenset(" ".join(WORD.findall(fold(w))) for w in (row["stop_words"] if row else ()))
            resume = frozenset(" ".join(WORD.findall(fold(w))) for w in (row["resume_words"] if row else ()))
            cached = (time.monotonic() + WORDS_TTL, stop, resume, row["opt_out_reply"] if row else None)
            self._cache[event.tenant_id] = cached
        if phrase in cached[1]:
            return True, cached[3]
        if phrase in cached[2]:
            return False, None
        return None


def stage_inbound(
    rows: FlushRows, key: EventKey, contact: Contact, verdict: tuple[bool, str | None] | None, now: float
) -> None:
    """With a handled inbound message: the reply mark, and the opt-out change of a STOP / START word."""
    at = datetime.fromtimestamp(now, UTC)
    rows.recovery_replies.append((key, contact.id, at))
    if verdict is not None:
        rows.preferences.append((key, contact.id, contact.tenant_id, verdict[0], "keyword", at))


def stage_preference(rows: FlushRows, key: EventKey, command: ConversationCommand, contact_id: str) -> None:
    """marketing_stop / marketing_resume (WhatsApp user_preferences)."""
    at = datetime.fromtimestamp(command.issued_at, UTC)
    opted_out = command.action == "marketing_stop"
    rows.preferences.append((key, contact_id, command.tenant_id, opted_out, "whatsapp_user_preferences", at))


def enter_flow(state: TenantState | None, conversation: Conversation, data: dict[str, Any]) -> bool:
    """Park the conversation at the reply flow's ask node; False if the flow is gone."""
    if state is None:
        return False
    flow = state.flows_by_slug.get((str(data.get("bot")), str(data.get("flow"))))
    if flow is None or data.get("node") not in flow.nodes:
        return False
    conversation.bot_id = flow.bot_id
    conversation.status = "bot"
    conversation.flow_id, conversation.flow_version, conversation.node_id = flow.id, flow.version, str(data["node"])
    return True


async def after_send(
    pool: asyncpg.Pool, settings: Settings, reply: OutboundMessage, code: str | None, error: str | None
) -> None:
    """Copy a recovery message's send outcome onto its step (code None: sent)."""
    rid = reply.recovery_message_id
    if rid is None:
        return
    if code is None:
        await pool.execute(sql.MARK_SENT, rid)
        return
    if code == "131049":
        retried = await pool.fetchval(sql.RETRY_LATER, rid, settings.marketing_cap_retry, code, (error or "")[:500],
                                      settings.marketing_cap_retries)  # fmt: skip
        if retried:
            return
        reason: str | None = "marketing_cap"
    else:
        reason = "outside_window" if code == "131047" else None
    await pool.execute(sql.MARK_FAILED, rid, code, (error or "")[:500], reason)
