"""Every event is cleaned at the edge (U+0000 out, sizes capped, ids and timestamps checked) and bound
to its channel: a body for another platform account sharing the app secret is dropped and counted."""

from __future__ import annotations

from typing import Any

import pytest

from engine import metrics
from engine.channels import clean
from engine.channels.base import MalformedBody
from engine.channels.messenger import MessengerChannel
from engine.channels.slack import SlackChannel
from engine.channels.whatsapp import WhatsAppChannel
from engine.models import ChannelType, DeliveryStatus, InboundEvent, MessageType, StatusEvent
from tests.unit import channel_helpers as h
from tests.unit.test_channel_slack import NOW, event_request, message

DEEP: list[Any] = ["deep"]
for _ in range(40):
    DEEP = [DEEP]


def event(**kw: Any) -> InboundEvent:
    base: dict[str, Any] = {
        "channel_id": "c", "tenant_id": "t", "channel_type": ChannelType.TELEGRAM, "event_id": "1",
        "conversation_key": "5", "contact_key": "5", "type": MessageType.TEXT, "timestamp": 1_700_000_000.0,
    }  # fmt: skip
    return InboundEvent(**{**base, **kw})


def test_nul_is_removed_everywhere_and_sizes_are_capped() -> None:
    cleaned = clean.inbound(
        event(
            text="a\x00b" + "x" * (clean.MAX_TEXT + 10),
            payload="p\x00" * clean.MAX_PAYLOAD,
            contact_name="An\x00n",
            contact_attributes={"k\x00": ["v\x00", {"deep\x00": "w\x00"}]},
            media={"caption": "c\x00"},
            raw={f"k{i}": "z" * 30_000 for i in range(3)},
        )
    )
    assert cleaned.text is not None and cleaned.text.startswith("abx") and len(cleaned.text) == clean.MAX_TEXT
    assert cleaned.payload == "p" * clean.MAX_PAYLOAD
    assert cleaned.contact_name == "Ann"
    assert cleaned.contact_attributes == {"k": ["v", {"deep": "w"}]}
    assert cleaned.media == {"caption": "c"}
    assert cleaned.raw["truncated"] is True and cleaned.raw["bytes"] > clean.MAX_RAW


@pytest.mark.parametrize(
    "bad",
    [
        {"timestamp": 1e20},
        {"timestamp": float("nan")},
        {"timestamp": -1.0},
        {"event_id": ""},
        {"event_id": "x" * (clean.MAX_ID + 1)},
        {"conversation_key": "a\nb"},
        {"contact_key": 5},
        {"text": 5},
        {"payload": ["x"]},
        {"media": "not a dict"},
        {"raw": {"a": DEEP}},
    ],
)
def test_values_of_the_wrong_shape_make_the_body_malformed(bad: dict[str, Any]) -> None:
    with pytest.raises(MalformedBody):
        clean.events([event(**bad)])


def test_status_events_are_checked_too() -> None:
    ok = StatusEvent("c", "t", "wamid.\x001", DeliveryStatus.READ, 1_749_416_388.0, "k", error="e\x00")
    assert clean.status(ok).platform_message_id == "wamid.1" and clean.status(ok).error == "e"
    with pytest.raises(MalformedBody, match="timestamp"):
        clean.events([StatusEvent("c", "t", "w", DeliveryStatus.READ, 1e20, "k")])


def _unbound(kind: str) -> float:
    return float(metrics.EVENTS_UNBOUND.labels(kind)._value.get())


def test_whatsapp_body_for_another_number_is_dropped_and_counted() -> None:
    channel = h.make_channel(ChannelType.WHATSAPP)
    value = {
        "metadata": {"phone_number_id": "other-number"},
        "messages": [{"from": "1", "id": "wamid.X", "timestamp": "1", "type": "text", "text": {"body": "hi"}}],
    }
    body = {"object": "whatsapp_business_account", "entry": [{"changes": [{"field": "messages", "value": value}]}]}
    before = _unbound("whatsapp")
    assert WhatsAppChannel().parse(h.meta_request(channel, body), channel) == []
    assert _unbound("whatsapp") == before + 1
    value["metadata"]["phone_number_id"] = channel.external_id  # type: ignore[index]
    assert len(WhatsAppChannel().parse(h.meta_request(channel, body), channel)) == 1


def test_messenger_event_for_another_page_is_dropped() -> None:
    channel = h.make_channel(ChannelType.MESSENGER)
    item = {
        "sender": {"id": "PSID1"},
        "recipient": {"id": "PAGE2"},
        "timestamp": 1,
        "message": {"mid": "m", "text": "x"},
    }
    body = {"object": "page", "entry": [{"id": "PAGE2", "messaging": [item]}]}
    before = _unbound("messenger")
    assert MessengerChannel().parse(h.meta_request(channel, body), channel) == []
    assert _unbound("messenger") == before + 1


def test_slack_event_of_another_workspace_is_dropped() -> None:
    channel = h.make_channel(ChannelType.SLACK)
    slack = SlackChannel(clock=lambda: NOW)
    assert slack.parse(event_request(message(), team_id="T9999", api_app_id="A9999"), channel) == []
    assert len(slack.parse(event_request(message()), channel)) == 1
