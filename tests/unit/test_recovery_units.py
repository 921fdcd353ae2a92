"""Recovery without I/O: the schema's CHECK lists are the code's enums, campaign validation names the
path of each bad field, the claim-time decision, the platform window, the send window, rendering."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from engine.models import ChannelType
from engine.recovery import campaigns as c
from engine.recovery.decide import decide
from engine.recovery.render import Scope, render, whatsapp_template
from engine.recovery.setup import RecoveryDefinitionError, parse
from engine.recovery.window import message_kind, next_opening
from engine.store.recovery import REPLY_WINDOW, may_reply

SQL = (Path(__file__).resolve().parents[2] / "sql" / "0007_recovery.sql").read_text()


def _check_list(column: str) -> set[str]:
    match = re.search(rf"\b{column}\s+text[^\n]*?CHECK \({column} IN \(([^)]*)\)\)", SQL, re.S)
    assert match, column
    return set(re.findall(r"'([a-z_]+)'", match.group(1)))


@pytest.mark.parametrize(
    ("column", "enum"),
    [
        ("event_type", c.EventType),
        ("campaign_type", c.CampaignType),
        ("skip_reason", c.SkipReason),
        ("category", c.TemplateCategory),
    ],
)
def test_check_lists_are_the_enums(column: str, enum: type[StrEnum]) -> None:
    assert _check_list(column) == {e.value for e in enum}


def test_status_check_lists_are_the_enums() -> None:
    statuses = [set(re.findall(r"'([a-z_]+)'", m)) for m in re.findall(r"CHECK \(status IN \(([^)]*)\)\)", SQL, re.S)]
    for enum in (c.TemplateStatus, c.CampaignStatus, c.EventStatus, c.MessageStatus):
        assert {e.value for e in enum} in statuses, enum


CAMPAIGN: dict[str, Any] = {
    "slug": "cart",
    "triggers": ["cart_abandoned"],
    "steps": [{"delay": "30m", "template": "cart_reminder"}],
}


def _validate(raw: dict[str, Any]) -> None:
    section = parse(raw)
    errors = c.check_references(section, {"shop": "B1"}, {("B1", "help"): {"ask": "ask", "say": "message"}}, set())
    if errors:
        raise RecoveryDefinitionError(errors)


def _problems(raw: dict[str, Any]) -> list[str]:
    with pytest.raises(RecoveryDefinitionError) as info:
        _validate(raw)
    return info.value.problems


def test_invalid_campaigns_name_the_path_of_each_bad_field() -> None:
    bad = {**CAMPAIGN, "steps": [{"delay": "soon", "text": "x"}, {"delay": 5}], "send_window": {"start": "25:00"}}
    problems = _problems({"campaigns": [bad], "templates": []})
    assert any(p.startswith("campaigns[0].steps[0].delay: expected a duration") for p in problems)
    assert any(p.startswith("campaigns[0].steps[1]: a step needs a template, a text") for p in problems)
    assert any(p.startswith("campaigns[0].send_window.start: expected HH:MM") for p in problems)
    assert _problems({"campaigns": [{**CAMPAIGN, "triggers": ["cart_lost"]}]})[0].startswith("campaigns[0].triggers[0]")


def test_references_are_checked() -> None:
    step = {"delay": "1h", "template": "nope", "reply_flow": {"bot": "shop", "flow": "help", "node": "say"}}
    problems = _problems({"campaigns": [{**CAMPAIGN, "steps": [step]}, CAMPAIGN]})
    assert problems == [
        "campaigns[0].steps[0].template: unknown template 'nope' (templates: [])",
        "campaigns[0].steps[0].reply_flow.node: node 'say' is a message node; a reply can only answer an ask node",
        "campaigns[1].slug: duplicate campaign 'cart'",
        "campaigns[1].steps[0].template: unknown template 'cart_reminder' (templates: [])",
    ]


NOW = datetime(2025, 3, 3, 12, 0, tzinfo=UTC)  # 13:00 in Madrid


def _ctx(**overrides: Any) -> dict[str, Any]:
    ctx = {
        "campaign_status": "active", "contact_key": "34600", "channel_type": "whatsapp", "channel_active": True,
        "event_status": "scheduled", "expires_at": NOW + timedelta(days=1), "opted_out": False, "replied": False,
        "sent_for_event": 0, "scheduled_at": NOW - timedelta(seconds=1), "attributes": {},
        "tenant_timezone": "Europe/Madrid", "last_other_at": None, "step": 0, "last_inbound_at": None,
    }  # fmt: skip
    return {**ctx, **overrides}


def _campaign(**fields: Any) -> c.Campaign:
    return c.Campaign.model_validate({**CAMPAIGN, **fields})


def test_decide_exits_and_caps() -> None:
    campaign = _campaign()
    assert decide(_ctx(), campaign, NOW, True).kind == "template"
    assert decide(_ctx(event_status="recovered"), campaign, NOW, True).reason is c.SkipReason.CONVERTED
    assert decide(_ctx(expires_at=NOW), campaign, NOW, True).reason is c.SkipReason.EXPIRED
    assert decide(_ctx(opted_out=True), campaign, NOW, True).reason is c.SkipReason.OPTED_OUT
    assert decide(_ctx(opted_out=True), _campaign(category="utility"), NOW, True).action == "send"
    assert decide(_ctx(replied=True), campaign, NOW, True).reason is c.SkipReason.REPLIED
    assert decide(_ctx(replied=True), _campaign(exit_on=["converted"]), NOW, True).action == "send"
    assert decide(_ctx(sent_for_event=3), campaign, NOW, True).reason is c.SkipReason.MAX_MESSAGES
    recent = _ctx(last_other_at=NOW - timedelta(hours=23))
    assert decide(recent, campaign, NOW, True).reason is c.SkipReason.FREQUENCY_CAP
    assert decide(recent, _campaign(frequency_cap="12h"), NOW, True).action == "send"
    assert decide(_ctx(), campaign, NOW, False).reason is c.SkipReason.OUTSIDE_WINDOW
    assert decide(_ctx(scheduled_at=NOW - timedelta(hours=13)), campaign, NOW, True).reason is c.SkipReason.STALE


def test_decide_holds_until_the_send_window_opens_in_the_contact_zone() -> None:
    window = {"start": "18:00", "end": "21:00"}
    plan = decide(_ctx(), _campaign(send_window=window), NOW, True)
    assert plan.action == "hold" and plan.until == datetime(2025, 3, 3, 18, 0, tzinfo=ZoneInfo("Europe/Madrid"))
    # 13:00 in Madrid is 20:00 in Shanghai: inside the window for a contact there.
    assert decide(_ctx(attributes={"timezone": "Asia/Shanghai"}), _campaign(send_window=window), NOW, True).kind
    assert decide(_ctx(), _campaign(send_window=window, max_staleness="2h"), NOW, True).reason is c.SkipReason.STALE


def test_platform_windows() -> None:
    recent, old = NOW - timedelta(hours=1), NOW - timedelta(hours=25)
    wa, fb, tg = ChannelType.WHATSAPP, ChannelType.MESSENGER, ChannelType.TELEGRAM
    assert message_kind(wa, recent, NOW, True, True) == ("text", None)
    assert message_kind(wa, old, NOW, True, True) == ("template", None)
    assert message_kind(wa, None, NOW, False, True) == (None, c.SkipReason.OUTSIDE_WINDOW)
    assert message_kind(fb, recent, NOW, False, True) == ("text", None)
    assert message_kind(fb, old, NOW, True, True) == (None, c.SkipReason.PLATFORM_WINDOW)
    assert message_kind(tg, None, NOW, False, True) == ("text", None)


def test_next_opening_past_midnight() -> None:
    tz = ZoneInfo("UTC")
    assert next_opening(NOW, tz, "22:00", "02:00") == datetime(2025, 3, 3, 22, 0, tzinfo=tz)
    assert next_opening(NOW.replace(hour=23), tz, "22:00", "02:00") is None
    assert next_opening(NOW.replace(hour=1), tz, "22:00", "02:00") is None
    assert next_opening(NOW.replace(hour=8), tz, "09:00", "17:00") == datetime(2025, 3, 3, 9, 0, tzinfo=tz)


def test_render_texts_and_templates() -> None:
    scope = Scope({"value": 1234.5, "currency": "EUR", "data": {"url": "https://x/c/1"}}, {"name": None})
    assert render("{{contact.name | friend}}: {{event.value | currency}} at {{event.data.url}}", scope) == (
        "friend: €1,234.50 at https://x/c/1"
    )
    row = {"name": "cart", "language": "es", "text": "Hola {{1}}: {{2}}", "components": [
        {"type": "body", "parameters": ["{{contact.name | amigo}}", "{{event.value | currency}}"]},
        {"type": "button", "sub_type": "quick_reply", "index": 1, "parameters": ["help"]},
    ]}  # fmt: skip
    template, preview = whatsapp_template(row, scope)
    assert preview == "Hola amigo: €1,234.50"
    assert template["components"][1] == {
        "type": "button", "sub_type": "quick_reply", "index": "1", "parameters": [{"type": "payload", "payload": "help"}]
    }  # fmt: skip
    assert template["components"][0]["parameters"][1]["currency"]["amount_1000"] == 1234500


def test_the_scheduler_keys_a_new_conversation_as_the_worker_does() -> None:
    from engine.recovery.scheduler import conversation_id as scheduler_id
    from engine.worker.conversations import conversation_id as worker_id

    assert scheduler_id("c9b1a7f4-0000-4000-8000-000000000001", "34600") == worker_id(
        "c9b1a7f4-0000-4000-8000-000000000001", "34600"
    )


def test_a_message_can_answer_only_a_recovery_message_queued_within_the_window() -> None:
    at = datetime(2026, 11, 1, 12, tzinfo=UTC)
    queued = {"never": None, "recent": at - timedelta(hours=1), "old": at - REPLY_WINDOW, "later": at + timedelta(1)}
    assert not may_reply("never", at, queued)
    assert may_reply("recent", at, queued)
    assert not may_reply("old", at, queued)  # the window is open at its start, as MARK_REPLIED says
    assert may_reply("later", at, queued)  # the latest was queued after; one before may still be in the window
    assert may_reply("not upserted", at, queued)  # unknown: looked for
