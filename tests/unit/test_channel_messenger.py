from __future__ import annotations

from typing import Any

import aiohttp
import pytest

from engine.channels.base import MalformedBody, Unauthorized
from engine.channels.messenger import MessengerChannel
from engine.fake_platforms import Fault
from engine.models import Button, ChannelType, DeliveryStatus, InboundEvent, MessageType, SendError, StatusEvent
from tests.unit import channel_helpers as h

fake = pytest.fixture(h.fake_server)
http = pytest.fixture(h.client_session)

PAGE = h.make_channel(ChannelType.MESSENGER)
IG = h.make_channel(ChannelType.INSTAGRAM)
FB = MessengerChannel()
TS = 1700000000123  # Meta page webhooks count milliseconds


def item(**kw: Any) -> dict[str, Any]:
    return {"sender": {"id": "PSID1"}, "recipient": {"id": "PAGE1"}, "timestamp": TS, **kw}


def envelope(*items: dict[str, Any], obj: str = "page") -> dict[str, Any]:
    return {"object": obj, "entry": [{"id": "PAGE1", "time": TS, "messaging": list(items)}]}


def parse(payload: object, channel: h.ChannelInfo = PAGE) -> list[Any]:
    request = h.meta_request(channel, payload)
    FB.verify(request, channel)
    return FB.parse(request, channel)


def test_handshake_and_signature() -> None:
    query = {"hub.mode": "subscribe", "hub.verify_token": "fb-verify", "hub.challenge": "42"}
    reply = FB.handshake(h.make_request(method="GET", query=query), PAGE)
    assert reply is not None
    assert reply.text == "42"
    with pytest.raises(Unauthorized) as wrong:
        FB.handshake(h.make_request(method="GET", query={**query, "hub.verify_token": "x"}), PAGE)
    assert wrong.value.status == 403
    with pytest.raises(Unauthorized) as unsigned:
        FB.verify(h.make_request(b"{}"), PAGE)
    assert unsigned.value.status == 401
    # Instagram channels carry their own app secret.
    with pytest.raises(Unauthorized):
        FB.verify(h.meta_request(PAGE, envelope(obj="instagram")), IG)


def test_every_event_kind() -> None:
    events = parse(
        envelope(
            item(message={"mid": "m_TXT", "text": "hi"}),
            item(message={"mid": "m_QR", "text": "Red", "quick_reply": {"payload": "COLOR_RED"}}),
            item(message={"mid": "m_IMG", "attachments": [{"type": "image", "payload": {"url": "https://cdn/x.jpg"}}]}),
            item(message={"mid": "m_ECHO", "text": "our own", "is_echo": True, "app_id": 1}),
            item(postback={"mid": "m_PB", "title": "Get Started", "payload": "GET_STARTED"}),
            item(postback={"title": "Old", "payload": "OLD"}),
            item(reaction={"mid": "m_TXT", "action": "react", "emoji": "\u2764", "reaction": "love"}),
            item(delivery={"mids": ["m_OUT1", "m_OUT2"], "watermark": TS}),
            item(read={"watermark": TS}),
        )
    )
    inbound = [e for e in events if isinstance(e, InboundEvent)]
    statuses = [e for e in events if isinstance(e, StatusEvent)]
    assert [(e.event_id, e.type) for e in inbound] == [
        ("m_TXT", MessageType.TEXT),
        ("m_QR", MessageType.BUTTON),
        ("m_IMG", MessageType.MEDIA),
        ("m_PB", MessageType.BUTTON),
        (f"postback:PSID1:{TS}", MessageType.BUTTON),
        (f"reaction:PSID1:m_TXT:react:{TS}", MessageType.REACTION),
    ]
    text, quick, image, postback = inbound[:4]
    assert (text.text, text.conversation_key, text.contact_key) == ("hi", "PSID1", "PSID1")
    assert text.timestamp == TS / 1000
    assert text.reply_to == {"recipient_id": "PSID1", "page_id": "PAGE1"}
    assert (quick.payload, quick.text) == ("COLOR_RED", "Red")
    assert image.media == {"kind": "image", "url": "https://cdn/x.jpg"}
    assert (postback.payload, postback.text) == ("GET_STARTED", "Get Started")
    assert [(s.platform_message_id, s.status) for s in statuses] == [
        ("m_OUT1", DeliveryStatus.DELIVERED),
        ("m_OUT2", DeliveryStatus.DELIVERED),
    ]


def test_instagram_envelope_and_echoes() -> None:
    events = parse(
        envelope(
            item(message={"mid": "ig_1", "text": "hey"}, recipient={"id": "IGACCOUNT1"}),
            item(message={"mid": "ig_2", "text": "echo", "is_echo": True}),
            obj="instagram",
        ),
        IG,
    )
    assert [(e.event_id, e.channel_type) for e in events] == [("ig_1", ChannelType.INSTAGRAM)]


@pytest.mark.parametrize(
    "raw",
    [
        b"{",
        h.dumps({"object": "whatsapp_business_account", "entry": []}),
        h.dumps({"object": "page"}),
        h.dumps(envelope({"message": {"mid": "m", "text": "no sender"}})),
        h.dumps(envelope(item(message={"text": "no mid"}))),
    ],
)
def test_malformed(raw: bytes) -> None:
    with pytest.raises(MalformedBody):
        FB.parse(h.make_request(raw), PAGE)


async def test_send_text_with_quick_replies(fake: h.FakeServer, http: aiohttp.ClientSession) -> None:
    base, recorder = fake
    buttons = (Button("COLOR_RED", "Red"), Button("COLOR_BLUE", "A rather long blue title"))
    message = h.outbound(PAGE, "Pick", buttons=buttons, reply_to={"recipient_id": "PSID1", "page_id": "PAGE1"})
    first = await FB.send(http, f"{base}/graph", PAGE, message)
    second = await FB.send(http, f"{base}/graph", PAGE, message)
    assert first.platform_message_id
    assert first.platform_message_id != second.platform_message_id
    sent = recorder.sent("messenger", chat="PSID1", ok=True)
    assert sent[0].path == "/graph/PAGE1/messages"
    assert sent[0].body == {
        "recipient": {"id": "PSID1"},
        "messaging_type": "RESPONSE",
        "message": {
            "text": "Pick",
            "quick_replies": [
                {"content_type": "text", "title": "Red", "payload": "COLOR_RED"},
                {"content_type": "text", "title": "A rather long blue t", "payload": "COLOR_BLUE"},
            ],
        },
    }


@pytest.mark.parametrize(
    ("fault", "code", "retryable", "retry_after"),
    [
        (Fault("messenger", status=429), "613", True, 60.0),
        (Fault("messenger", status=500), "1", True, None),
        (Fault("messenger", status=400, error_code=551), "551", False, None),
        (Fault("messenger", status=400, error_code=10), "10", False, None),
        (Fault("messenger", status=401), "190", False, None),
    ],
)
async def test_send_errors(
    fake: h.FakeServer,
    http: aiohttp.ClientSession,
    fault: Fault,
    code: str,
    retryable: bool,
    retry_after: float | None,
) -> None:
    base, recorder = fake
    recorder.add_fault(fault)
    message = h.outbound(IG, reply_to={"recipient_id": "IGSID1"})
    with pytest.raises(SendError) as err:
        await FB.send(http, f"{base}/graph", IG, message)
    assert (err.value.code, err.value.retryable, err.value.retry_after) == (code, retryable, retry_after)
    assert recorder.sent("messenger")[0].path == "/graph/IGACCOUNT1/messages"  # page id from the channel
