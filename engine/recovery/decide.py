"""What to do with one due step, decided at claim time from a snapshot of everything it depends on.

Order of the checks (the first that applies wins): the campaign is still active; the contact and its
channel exist; the exit conditions (converted, replied, opted out for marketing, expired); the
messages-per-event bound; the send window (hold until it opens, or skip as stale past
max_staleness); the frequency cap across campaigns (skip, never reschedule); the platform's window
(template or text, or skip). Pure: no I/O, so every branch is unit-testable.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from engine.models import ChannelType
from engine.recovery.campaigns import Campaign, Category, EventStatus, SkipReason
from engine.recovery.window import message_kind, next_opening, zone

# Reasons that end the sequence: no later step is scheduled after them.
FINAL = frozenset({
    SkipReason.CONVERTED, SkipReason.REPLIED, SkipReason.OPTED_OUT, SkipReason.EXPIRED, SkipReason.MAX_MESSAGES,
    SkipReason.CAMPAIGN_INACTIVE, SkipReason.NO_CONTACT, SkipReason.NO_CHANNEL,
})  # fmt: skip


@dataclass(frozen=True, slots=True)
class Plan:
    action: str  # send | skip | hold
    reason: SkipReason | None = None
    kind: str | None = None  # template | text (send)
    until: datetime | None = None  # hold

    @property
    def final(self) -> bool:
        return self.action == "skip" and self.reason in FINAL


def _skip(reason: SkipReason) -> Plan:
    return Plan("skip", reason)


def _exit(ctx: dict[str, Any], campaign: Campaign, now: datetime) -> SkipReason | None:
    if ctx["campaign_status"] != "active":
        return SkipReason.CAMPAIGN_INACTIVE
    if ctx["contact_key"] is None:
        return SkipReason.NO_CONTACT
    if ctx["channel_type"] is None or not ctx["channel_active"]:
        return SkipReason.NO_CHANNEL
    if "converted" in campaign.exit_on and ctx["event_status"] in (EventStatus.RECOVERED, EventStatus.CONVERTED):
        return SkipReason.CONVERTED
    if now >= ctx["expires_at"]:
        return SkipReason.EXPIRED
    if ctx["opted_out"] and campaign.category is Category.MARKETING:
        return SkipReason.OPTED_OUT
    if "replied" in campaign.exit_on and ctx["replied"]:
        return SkipReason.REPLIED
    if ctx["sent_for_event"] >= campaign.max_messages:
        return SkipReason.MAX_MESSAGES
    return None


def decide(ctx: dict[str, Any], campaign: Campaign, now: datetime, has_template: bool) -> Plan:
    """ctx: a row of store.recovery.SELECT_CLAIM_CONTEXT; has_template: the step's template exists
    and is approved."""
    if (reason := _exit(ctx, campaign, now)) is not None:
        return _skip(reason)
    due: datetime = ctx["scheduled_at"]
    staleness = timedelta(seconds=campaign.max_staleness)
    if now - due > staleness:
        return _skip(SkipReason.STALE)
    if (window := campaign.send_window) is not None:
        tz = zone((ctx["attributes"] or {}).get("timezone"), ctx["tenant_timezone"])
        opening = next_opening(now, tz, window.start, window.end)
        if opening is not None:
            return _skip(SkipReason.STALE) if opening - due > staleness else Plan("hold", until=opening)
    cap = campaign.frequency_cap
    if cap and ctx["last_other_at"] is not None and now - ctx["last_other_at"] < timedelta(seconds=cap):
        return _skip(SkipReason.FREQUENCY_CAP)
    step = campaign.steps[ctx["step"]]
    kind, reason = message_kind(
        ChannelType(ctx["channel_type"]), ctx["last_inbound_at"], now, has_template, step.text is not None
    )
    if kind is None:
        assert reason is not None
        return _skip(reason)
    return Plan("send", kind=kind)
