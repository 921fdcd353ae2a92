"""`engine scheduler`: claim due recovery steps and hand them to the senders. Any number may run.

One claim = one transaction: `SELECT ... FOR UPDATE SKIP LOCKED` takes a batch of due pending rows
(another scheduler skips them), every step is checked again against fresh data (engine.recovery.
decide), and what was decided commits together: a skip with its reason, a hold until the send window
opens, or a send. A send writes the outbound row (channel_messages, `queued`, with the same
OutboundMessage body a bot reply has) and its transcript line, marks the step `queued`, and schedules
the next step. Only after the commit is the message published to the outbound queue of the
conversation's shard, so the sender delivers it in order with the bot's replies, with rate limits and
receipts. A crash before the commit leaves the rows pending for the next claim; a crash after it
leaves a `queued` outbound row, which the senders' sweeper re-publishes; the sender's claim
(queued -> sending, once) and the unique (campaign, event, step) key make a second send impossible.

The loop sleeps until the next due step, and a NOTIFY (sql/0007: a row made pending) wakes it when
a sooner one is inserted, so delays are exact to about a second's fraction.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
from aio_pika.abc import AbstractExchange

from engine import metrics
from engine.bus.connection import connect, make_message, open_channel
from engine.bus.shards import new_member_id
from engine.bus.topology import Topology, declare_topology
from engine.models import ChannelType, ConversationCommand, OutboundMessage, stable_id
from engine.recovery.campaigns import Campaign, EventType, MessageStatus
from engine.recovery.decide import Plan, decide
from engine.recovery.intake import CustomerRef, NewEvent, message_id, store_event
from engine.recovery.render import Scope, render, whatsapp_template
from engine.settings import Settings
from engine.store import recovery as sql
from engine.store.pool import create_pool

log = logging.getLogger(__name__)
CHANNEL = "engine_recovery"
MAX_SLEEP = 5.0  # seconds: poll at least this often (a NOTIFY lost with a dropped connection)


@dataclass(slots=True)
class Claimed:
    """What one claim decided that needs the broker after the commit."""

    outbound: list[OutboundMessage]
    commands: list[ConversationCommand]
    decided: int


def conversation_id(channel_id: str, key: str) -> str:
    """The worker's id for the conversation keyed `key` (engine.worker.conversations.conversation_id,
    which this layer may not import; a unit test holds the two equal)."""
    return str(stable_id(channel_id, "conversation", key))


def address(channel_type: ChannelType, key: str, attributes: dict[str, Any], external_id: str | None) -> dict[str, Any]:
    """reply_to for a message the contact did not prompt: how each platform addresses a direct chat."""
    chat = key.split(":", 1)[0]
    if channel_type is ChannelType.WHATSAPP:
        phone = attributes.get("phone") or (key if key.isdigit() else None)
        return {"phone_number_id": external_id, **({"to": phone} if phone else {"recipient": key})}
    if channel_type is ChannelType.TELEGRAM:
        return {"chat_id": int(chat) if chat.lstrip("-").isdigit() else chat}
    if channel_type in (ChannelType.MESSENGER, ChannelType.INSTAGRAM):
        return {"recipient_id": key, "page_id": external_id}
    return {"channel": chat}


class Scheduler:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.topology = Topology.of(settings)
        self._wake = asyncio.Event()

    async def run(self, stop: asyncio.Event) -> None:
        s = self.settings
        self.pool = await create_pool(s.database_url, max_size=4)
        me = new_member_id("scheduler")
        self.connection = await connect(s.amqp_url, me)
        channel = await open_channel(self.connection)
        await declare_topology(channel, self.topology)
        self.outbound: AbstractExchange = await channel.get_exchange(self.topology.outbound)
        self.inbound: AbstractExchange = await channel.get_exchange(self.topology.inbound)
        listener = await asyncpg.connect(s.database_url)
        await listener.add_listener(CHANNEL, lambda *_: self._wake.set())
        log.info("scheduler %s started", me)
        last_housekeeping = 0.0
        try:
            while not stop.is_set():
                claimed = await self._claim_safely()
                if time.monotonic() - last_housekeeping > s.scheduler_housekeeping:
                    last_housekeeping = time.monotonic()
                    await self._housekeeping()
                if claimed:
                    continue  # there may be more due right now
                await self._sleep(stop)
        finally:
            with contextlib.suppress(Exception):
                await listener.close()
            await self.connection.close()
            await self.pool.close()
            log.info("scheduler %s stopped", me)

    async def _sleep(self, stop: asyncio.Event) -> None:
        self._wake.clear()
        try:
            next_due = await self.pool.fetchval(sql.NEXT_DUE)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
            next_due = None  # the next claim will report the outage
        longest = min(MAX_SLEEP, self.settings.scheduler_housekeeping)
        wait = longest if next_due is None else min(longest, max(0.0, float(next_due) - time.time()))
        waiters = [asyncio.ensure_future(self._wake.wait()), asyncio.ensure_future(stop.wait())]
        await asyncio.wait(waiters, timeout=wait, return_when=asyncio.FIRST_COMPLETED)
        for w in waiters:
            w.cancel()

    async def _claim_safely(self) -> int:
        try:
            return await self.claim_once()
        except (OSError, asyncpg.PostgresConnectionError, asyncpg.InterfaceError) as exc:
            log.warning("claim skipped: database unavailable (%s)", type(exc).__name__)
            await asyncio.sleep(1.0)
            return 0

    async def claim_once(self) -> int:
        """Claim and decide one batch; publish its sends after the commit. Returns steps decided."""
        async with self.pool.acquire() as conn, conn.transaction():
            ids = [r["id"] for r in await conn.fetch(sql.CLAIM_DUE, self.settings.scheduler_batch)]
            if not ids:
                return 0
            if self.settings.scheduler_claim_hold:  # tests: a window in which to kill a claiming process
                await asyncio.sleep(self.settings.scheduler_claim_hold)
            claimed = await self._decide_all(conn, ids)
        await self._publish(claimed)
        return claimed.decided

    async def _decide_all(self, conn: asyncpg.Connection, ids: list[str]) -> Claimed:
        await conn.fetchval(sql.LOCK_CONTACTS, ids)
        rows = [dict(r) for r in await conn.fetch(sql.SELECT_CLAIM_CONTEXT, ids)]
        now = datetime.now(UTC)
        out = Claimed([], [], 0)
        templates = await self._templates(conn, rows)
        sent_now: dict[str, str] = {}  # contact -> event sent to in this batch (the context predates it)
        campaigns: dict[str, Campaign] = {}  # a batch's steps mostly share a few campaigns: parse each once
        for ctx in sorted(rows, key=lambda r: r["scheduled_at"]):
            ctx = await self._preferred_channel(conn, ctx)
            if sent_now.get(ctx["contact_id"], ctx["event_id"]) != ctx["event_id"]:
                ctx["last_other_at"] = now
            campaign = campaigns.get(ctx["campaign_id"])
            if campaign is None:
                campaign = campaigns[ctx["campaign_id"]] = Campaign.model_validate(ctx["definition"])
            step = campaign.steps[ctx["step"]]
            template = templates.get((ctx["tenant_id"], step.template or ""))
            plan = decide(ctx, campaign, now, template is not None)
            await self._apply(conn, ctx, campaign, plan, template, now, out)
            if plan.action == "send":
                sent_now[ctx["contact_id"]] = ctx["event_id"]
            out.decided += 1
        return out

    async def _preferred_channel(self, conn: asyncpg.Connection, ctx: dict[str, Any]) -> dict[str, Any]:
        """A step with `channel: <type>` goes to the same person's contact on that platform (matched by
        phone or email) when there is one; otherwise to the contact's last channel."""
        wanted = ctx["definition"]["steps"][ctx["step"]].get("channel", "last")
        if wanted == "last" or wanted == ctx["channel_type"] or ctx["contact_id"] is None:
            return ctx
        attributes = ctx["attributes"] or {}
        for attr in ("phone", "email"):
            if not attributes.get(attr):
                continue
            found = await conn.fetchrow(
                sql.SELECT_CONTACT_BY_ATTRIBUTE, ctx["tenant_id"], attr, attributes[attr], wanted
            )
            if found is not None:
                await conn.execute(sql.SWITCH_CONTACT, ctx["id"], found["id"], found["channel_id"])
                return dict(await conn.fetchrow(sql.SELECT_CLAIM_CONTEXT, [ctx["id"]]))
        return ctx

    async def _templates(self, conn: asyncpg.Connection, rows: list[dict[str, Any]]) -> dict[tuple[str, str], Any]:
        found: dict[tuple[str, str], Any] = {}
        wanted: dict[str, set[str]] = {}
        for ctx in rows:
            step = ctx["definition"]["steps"][ctx["step"]]
            if step.get("template"):
                wanted.setdefault(ctx["tenant_id"], set()).add(step["template"])
        for tenant, names in wanted.items():
            for r in await conn.fetch(sql.SELECT_TEMPLATES, tenant, sorted(names)):
                if r["status"] == "approved":
                    found[(tenant, r["name"])] = dict(r)
        return found

    async def _apply(
        self, conn: asyncpg.Connection, ctx: dict[str, Any], campaign: Campaign, plan: Plan,
        template: dict[str, Any] | None, now: datetime, out: Claimed,
    ) -> None:  # fmt: skip
        rid = ctx["id"]
        if plan.action == "hold":
            await conn.execute(sql.RESCHEDULE, rid, plan.until)
            metrics.RECOVERY_STEPS.labels("held").inc()
            return
        if plan.action == "skip":
            assert plan.reason is not None
            log.info("recovery step %s skipped: %s", rid, plan.reason.value)
            metrics.RECOVERY_STEPS.labels(f"skipped_{plan.reason.value}").inc()
            await conn.execute(sql.MARK_SKIPPED, rid, plan.reason.value)
        else:
            sent = await self._send(conn, ctx, campaign, plan, template, now, out)
            if not sent:
                return
        if not plan.final:
            await self._schedule_next(conn, ctx, campaign, now)

    async def _send(
        self, conn: asyncpg.Connection, ctx: dict[str, Any], campaign: Campaign, plan: Plan,
        template: dict[str, Any] | None, now: datetime, out: Claimed,
    ) -> bool:  # fmt: skip
        step = campaign.steps[ctx["step"]]
        channel_type = ChannelType(ctx["channel_type"])
        conversation = ctx["conversation"]
        if conversation is None:
            if channel_type is ChannelType.SLACK:  # a Slack DM needs a conversation the user opened
                await conn.execute(sql.MARK_SKIPPED, ctx["id"], "no_channel")
                return False
            key = ctx["contact_key"]
            conv_id = conversation_id(ctx["channel_id"], key)
            await conn.execute(
                sql.INSERT_CONVERSATION, conv_id, ctx["tenant_id"], ctx["channel_id"], ctx["contact_id"], key
            )
        else:
            conv_id, key = conversation["id"], conversation["external_key"]
        attributes = ctx["attributes"] or {}
        event = {
            "type": ctx["event_type"], "value": ctx["value"], "currency": ctx["currency"],
            "data": ctx["event_data"] or {}, "id": ctx["source_id"], "customer": ctx["customer"] or {},
        }  # fmt: skip
        scope = Scope(event, {"name": ctx["contact_name"], **attributes})
        rendered, preview = whatsapp_template(template, scope) if template else (None, "")
        kind = plan.kind
        text = render(step.text, scope) if kind == "text" and step.text else preview
        cm_id = str(stable_id(ctx["id"], "send", ctx["retry_count"]))
        message = OutboundMessage(
            id=cm_id, created_at=now.timestamp(), tenant_id=ctx["tenant_id"], channel_id=ctx["channel_id"],
            channel_type=channel_type, conversation_id=conv_id, conversation_key=key, text=text,
            reply_to=address(channel_type, key, attributes, ctx["channel_external_id"]),
            template=rendered if kind == "template" else None, recovery_message_id=ctx["id"],
        )  # fmt: skip
        history_id = str(stable_id(cm_id, "history"))
        await conn.execute(
            sql.INSERT_OUTBOUND, cm_id, ctx["tenant_id"], ctx["channel_id"], conv_id, history_id, message, now
        )
        payload = {
            "recovery": {"campaign": campaign.slug, "step": ctx["step"]},
            "template": step.template if kind == "template" else None,
        }
        await conn.execute(sql.INSERT_OUTBOUND_HISTORY, history_id, ctx["tenant_id"], ctx["channel_id"], conv_id,
                           kind, text, payload, now)  # fmt: skip
        await conn.execute(sql.MARK_QUEUED, ctx["id"], conv_id, cm_id, now, kind,
                           step.template if kind == "template" else None, text)  # fmt: skip
        out.outbound.append(message)
        if (rf := step.reply_flow) is not None:
            out.commands.append(ConversationCommand(
                ctx["channel_id"], ctx["tenant_id"], key, "recovery_flow", now.timestamp(),
                data={"bot": rf.bot, "flow": rf.flow, "node": rf.node, "recovery_message_id": ctx["id"]},
            ))  # fmt: skip
        log.info("recovery step %s queued as %s on %s", ctx["id"], kind, channel_type.value)
        metrics.RECOVERY_STEPS.labels(f"sent_{kind}").inc()
        return True

    async def _schedule_next(
        self, conn: asyncpg.Connection, ctx: dict[str, Any], campaign: Campaign, now: datetime
    ) -> None:
        following = ctx["step"] + 1
        if following >= len(campaign.steps):
            return
        step = campaign.steps[following]
        base = ctx["occurred_at"] if step.after == "event" else now
        due = base + timedelta(seconds=step.delay)
        await conn.execute(
            sql.INSERT_MESSAGE, message_id(ctx["campaign_id"], ctx["event_id"], following), ctx["tenant_id"],
            ctx["campaign_id"], ctx["event_id"], following, ctx["contact_id"], ctx["channel_id"],
            MessageStatus.PENDING.value, None, due,
        )  # fmt: skip

    async def _publish(self, claimed: Claimed) -> None:
        """After the commit: a lost publish leaves a queued row the senders' sweeper re-publishes."""
        for message in claimed.outbound:
            try:
                body = make_message(message, message_id=message.id, correlation_id=message.conversation_id)
                await self.outbound.publish(body, routing_key=self.topology.outbound_key(message), mandatory=True)
            except Exception as exc:  # the sweeper resends it
                log.error(
                    "recovery message %s not confirmed by the broker (%r); the sweeper will resend", message.id, exc
                )
        for command in claimed.commands:
            shard = self.topology.shard_of(command.tenant_id, command.channel_id, command.conversation_key)
            body = make_message(command, message_id=f"{command.data['recovery_message_id']}:flow",
                                    correlation_id=command.conversation_key)  # fmt: skip
            try:
                await self.inbound.publish(body, routing_key=str(shard), mandatory=True)
            except Exception as exc:  # the reply then reaches the bot's usual routing instead
                log.error("reply flow of %s not published (%r)", command.data["recovery_message_id"], exc)

    async def _housekeeping(self) -> None:
        try:
            await self.detect_unanswered()
            for row in await self.pool.fetch(sql.SELECT_TENANTS_WITH_CAMPAIGNS):
                await self.pool.execute(sql.REFRESH_ANALYTICS, row["tenant_id"], datetime.now(UTC) - timedelta(days=2))
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            log.warning("housekeeping skipped: %s", type(exc).__name__)

    async def detect_unanswered(self) -> int:
        """conversation_unanswered events for conversations waiting on the bot's question too long."""
        stored = 0
        for campaign in await self.pool.fetch(sql.SELECT_UNANSWERED_CAMPAIGNS):
            tenant = campaign["tenant_id"]
            for row in await self.pool.fetch(sql.SELECT_UNANSWERED, tenant, campaign["after"]):
                event = NewEvent(
                    EventType.CONVERSATION_UNANSWERED, "engine", f"{row['conversation_id']}:{row['since']}",
                    CustomerRef(), None, None, {"conversation_id": row["conversation_id"]}, row["last_message_at"],
                )  # fmt: skip
                async with self.pool.acquire() as conn, conn.transaction():
                    result = await store_event(
                        conn, tenant, "UTC", event, contact=(row["contact_id"], row["channel_id"])
                    )
                stored += not result.duplicate
        return stored
