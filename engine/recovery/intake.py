"""An event stored once, matched to a contact, and turned into each campaign's first step.

Everything for one event commits in one transaction: the event row (unique per tenant, source and
source id, so a retried post is a no-op), the contact it names when the engine never saw it, the
first step of every active campaign it triggers whose audience matches, and, for an order, the
attribution (engine.recovery.attribution).
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import asyncpg

from engine.brain.routing.compiler import Names
from engine.brain.routing.evaluator import holds
from engine.brain.routing.message import Message
from engine.brain.routing.rule_models import Condition
from engine.models import ChannelType, stable_id
from engine.recovery import attribution
from engine.recovery.campaigns import Campaign, EventStatus, EventType, MessageStatus, SkipReason
from engine.store import recovery as sql

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class CustomerRef:
    platform: ChannelType | None = None
    id: str | None = None
    channel: str | None = None  # a channel slug, when the tenant has several of a type
    phone: str | None = None
    email: str | None = None
    name: str | None = None


@dataclass(frozen=True, slots=True)
class NewEvent:
    type: EventType
    source: str
    source_id: str
    customer: CustomerRef
    value: Decimal | None
    currency: str | None
    data: dict[str, Any]
    occurred_at: datetime


@dataclass(slots=True)
class Stored:
    id: str
    duplicate: bool
    contact_id: str | None = None
    scheduled: list[str] = field(default_factory=list)  # campaign slugs with a first step pending
    credited: str | None = None  # the recovery message an order was credited to


def event_id(tenant_id: str, source: str, source_id: str) -> str:
    return str(stable_id(tenant_id, "recovery-event", source, source_id))


def message_id(campaign_id: str, event: str, step: int) -> str:
    return str(stable_id(campaign_id, event, "step", step))


def digits(phone: str) -> str:
    return re.sub(r"\D", "", phone)


async def resolve_contact(conn: asyncpg.Connection, tenant_id: str, c: CustomerRef) -> tuple[str, str, str] | None:
    """(contact id, channel id, channel type) for the customer, creating the channel contact when it
    names a platform id the engine has not seen; None when nothing matches. Emails are stored and
    looked up lower-case (as a flow's email answer is)."""
    email = c.email and c.email.lower()
    if c.platform is not None and c.id:
        row = (
            await conn.fetchrow(sql.SELECT_CHANNEL_BY_SLUG, tenant_id, c.channel)
            if c.channel
            else await conn.fetchrow(sql.SELECT_CHANNEL_BY_TYPE, tenant_id, c.platform.value)
        )
        if row is None or row["type"] != c.platform.value:
            return None
        key = digits(c.id) if c.platform is ChannelType.WHATSAPP and c.id.lstrip("+").isdigit() else c.id
        contact = str(stable_id(row["id"], "contact", key))
        attributes = {k: v for k, v in (("phone", c.phone and digits(c.phone)), ("email", email)) if v}
        if c.platform is ChannelType.WHATSAPP and key.isdigit():
            attributes.setdefault("phone", key)
        await conn.execute(sql.INSERT_CONTACT, contact, tenant_id, row["id"], key, c.name, attributes)
        return contact, row["id"], row["type"]
    for attr, value in (("phone", c.phone and digits(c.phone)), ("email", email)):
        if not value:
            continue
        found = await conn.fetchrow(sql.SELECT_CONTACT_BY_ATTRIBUTE, tenant_id, attr, value, None)
        if found is not None:
            return found["id"], found["channel_id"], found["type"]
    if c.phone:  # a phone the engine never saw: reachable on WhatsApp, if the tenant has it
        return await resolve_contact(
            conn, tenant_id, CustomerRef(ChannelType.WHATSAPP, digits(c.phone), c.channel, c.phone, c.email, c.name)
        )
    return None


def _customer_json(c: CustomerRef) -> dict[str, Any]:
    out = {"platform": c.platform.value if c.platform else None, "id": c.id, "channel": c.channel,
           "phone": c.phone, "email": c.email, "name": c.name}  # fmt: skip
    return {k: v for k, v in out.items() if v is not None}


async def store_event(
    conn: asyncpg.Connection,
    tenant_id: str,
    timezone: str,
    event: NewEvent,
    *,
    contact: tuple[str, str] | None = None,
) -> Stored:
    """Store the event and schedule what it triggers; the caller holds the transaction.
    contact: (contact id, channel id) when the engine itself knows it (conversation_unanswered)."""
    eid = event_id(tenant_id, event.source, event.source_id)
    resolved = (*contact, None) if contact else await resolve_contact(conn, tenant_id, event.customer)
    contact_id, channel_id, channel_type = resolved if resolved else (None, None, None)
    campaigns = [
        (row["id"], Campaign.model_validate(row["definition"]))
        for row in await conn.fetch(sql.SELECT_CAMPAIGNS_FOR, tenant_id, event.type.value)
    ]
    expiry = max((c.expire_after for _, c in campaigns), default=7 * 86400.0)
    inserted = await conn.fetchval(
        sql.INSERT_EVENT, eid, tenant_id, event.type.value, event.source, event.source_id, contact_id, channel_id,
        _customer_json(event.customer), event.value, event.currency, event.data, EventStatus.RECEIVED.value,
        event.occurred_at, expiry,
    )  # fmt: skip
    if inserted is None:
        return Stored(eid, duplicate=True, contact_id=contact_id)
    stored = Stored(eid, duplicate=False, contact_id=contact_id)
    if event.type is EventType.ORDER_PLACED:
        stored.credited = await attribution.credit_order(conn, tenant_id, eid, contact_id, event)
    context = await conn.fetchrow(sql.SELECT_CONTACT_CONTEXT, contact_id) if contact_id else None
    for campaign_id, campaign in campaigns:
        if context is not None and not _in_audience(campaign, context, contact_id or "", timezone):
            continue
        first = campaign.steps[0]
        status, reason = (MessageStatus.PENDING, None) if contact_id else (MessageStatus.SKIPPED, SkipReason.NO_CONTACT)
        await conn.execute(
            sql.INSERT_MESSAGE, message_id(campaign_id, eid, 0), tenant_id, campaign_id, eid, 0, contact_id,
            channel_id, status.value, reason and reason.value, _at(event.occurred_at, first.delay),
        )  # fmt: skip
        if contact_id:
            stored.scheduled.append(campaign.slug)
    if event.type is not EventType.ORDER_PLACED:
        final = EventStatus.SCHEDULED if stored.scheduled else EventStatus.IGNORED
        await conn.execute(sql.SET_EVENT_STATUS, eid, final.value, EventStatus.RECEIVED.value)
    log.info(
        "recovery event %s stored (%s, contact %s, channel %s): %d campaign(s)",
        eid, event.type.value, "matched" if contact_id else "unmatched", channel_type, len(stored.scheduled),
    )  # fmt: skip
    return stored


def _at(base: datetime, seconds: float) -> datetime:
    return datetime.fromtimestamp(base.timestamp() + seconds, UTC)


def _in_audience(campaign: Campaign, context: asyncpg.Record, contact_id: str, timezone: str) -> bool:
    tags = set(context["tags"] or ())
    if campaign.tags and not tags.intersection(campaign.tags):
        return False
    return audience_holds(campaign.audience, context["attributes"], context["channel_id"], context["channel_type"],
                          contact_id, timezone)  # fmt: skip


def audience_holds(
    cond: Condition | None, attributes: dict[str, Any], channel_id: str, channel_type: str, contact_id: str, tz: str
) -> bool:
    """The routing-rule language on the contact (attributes, channel, split, time), without a message."""
    message = Message(
        text="", type="text", channel_id=channel_id, channel_type=channel_type, contact_id=contact_id,
        timestamp=datetime.now(UTC).timestamp(), attributes=attributes,
    )  # fmt: skip
    return holds(cond, message, Names(timezone=tz))
