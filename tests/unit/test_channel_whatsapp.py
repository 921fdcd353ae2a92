from __future__ import annotations

import copy
from typing import Any

import aiohttp
import pytest

from engine.channels.base import MalformedBody, Unauthorized
from engine.channels.whatsapp import WhatsAppChannel
from engine.fake_platforms import Fault
from engine.models import Button, ChannelType, DeliveryStatus, InboundEvent, MessageType, SendError, StatusEvent
from tests.unit import channel_helpers as h

fake = pytest.fixture(h.fake_server)
http = pytest.fixture(h.client_session)

CHANNEL = h.make_channel(ChannelType.WHATSAPP)
WA = WhatsAppChannel()
PNID = "106540352242922"
BSUID = "US.13491208655302741918"


def envelope(*values: dict[str, Any], field: str = "messages") -> dict[str, Any]:
    return {
        "object": "whatsapp_business_account",
        "entry": [{"id": "WABA1", "changes": [{"field": field, "value": v} for v in values]}],
    }


def value(messages: list[dict[str, Any]] | None = None, statuses: list[dict[str, Any]] | None = None) -> dict:
    v: dict[str, Any] = {
        "messaging_product": "whatsapp",
        "metadata": {"display_phone_number": "15550001111", "phone_number_id": PNID},
        "contacts": [{"profile": {"name": "Ann"}, "wa_id": "16505551234", "user_id": BSUID}],
    }
    if messages is not None:
        v["messages"] = messages
    if statuses is not None:
        v["statuses"] = statuses
    return v


def msg(mid: str, kind: str, **content: Any) -> dict[str, Any]:
    return {"from": "16505551234", "from_user_id": BSUID, "id": mid, "timestamp": "1749416383", "type": kind, **content}


ALL_TYPES = [
    msg("wamid.TXT", "text", text={"body": "Does it come in another color?"}),
    msg(
        "wamid.BTN1",
        "interactive",
        context={"from": "15550001111", "id": "wamid.OUT0"},
        interactive={"type": "button_reply", "button_reply": {"id": "opt_yes", "title": "Yes"}},
    ),
    msg(
        "wamid.LST1",
        "interactive",
        context={"from": "15550001111", "id": "wamid.OUT0"},
        interactive={"type": "list_reply", "list_reply": {"id": "row_2", "title": "Two", "description": "d"}},
    ),
    msg(
        "wamid.TPL1",
        "button",
        context={"from": "15550001111", "id": "wamid.TPL"},
        button={"payload": "opt_no", "text": "No"},
    ),
    msg("wamid.IMG1", "image", image={"id": "1003", "mime_type": "image/jpeg", "sha256": "x", "caption": "look"}),
    msg("wamid.AUD1", "audio", audio={"id": "1004", "mime_type": "audio/ogg", "voice": True}),
    msg("wamid.VID1", "video", video={"id": "1005", "mime_type": "video/mp4"}),
    msg("wamid.DOC1", "document", document={"id": "1006", "mime_type": "application/pdf", "filename": "a.pdf"}),
    msg("wamid.STK1", "sticker", sticker={"id": "1007", "mime_type": "image/webp", "animated": False}),
    msg("wamid.LOC1", "location", location={"latitude": 52.5, "longitude": 13.4, "name": "Home"}),
    msg("wamid.CON1", "contacts", contacts=[{"name": {"formatted_name": "Bob"}, "phones": [{"phone": "+1"}]}]),
    msg("wamid.REA1", "reaction", reaction={"message_id": "wamid.OUT0", "emoji": "\u2764"}),
    msg("wamid.UNS1", "unsupported", errors=[{"code": 131051, "title": "Message type unknown"}]),
]


# --- handshake and signature ------------------------------------------------------------------------


def test_handshake_echoes_challenge() -> None:
    query = {"hub.mode": "subscribe", "hub.verify_token": "wa-verify", "hub.challenge": "1158201444"}
    reply = WA.handshake(h.make_request(method="GET", query=query), CHANNEL)
    assert reply is not None
    assert (reply.status, reply.text) == (200, "1158201444")


@pytest.mark.parametrize(
    "query",
    [
        {"hub.mode": "subscribe", "hub.verify_token": "wrong", "hub.challenge": "1"},
        {"hub.mode": "unsubscribe", "hub.verify_token": "wa-verify", "hub.challenge": "1"},
        {"hub.challenge": "1"},
    ],
)
def test_handshake_refuses_wrong_token_with_403(query: dict[str, str]) -> None:
    with pytest.raises(Unauthorized) as err:
        WA.handshake(h.make_request(method="GET", query=query), CHANNEL)
    assert err.value.status == 403


def test_handshake_agrees_with_pywa() -> None:
    from pywa import WhatsApp

    wa = WhatsApp(phone_id=PNID, token="x", server=None, verify_token="wa-verify", app_secret="wa-app-secret")
    assert wa.webhook_challenge_handler("wa-verify", "1158201444") == ("1158201444", 200)
    assert wa.webhook_challenge_handler("nope", "1")[1] == 403


def test_post_has_no_handshake() -> None:
    assert WA.handshake(h.make_request(b"{}"), CHANNEL) is None


def test_verify_accepts_meta_signature_and_pywa_agrees() -> None:
    from pywa import utils

    # Non-ASCII text arrives escaped (\u00e4); the HMAC is over those raw bytes, never re-serialised.
    request = h.meta_request(CHANNEL, envelope(value([msg("wamid.U", "text", text={"body": "h\u00e4llo"})])))
    assert b"\\u00e4" in request.body
    WA.verify(request, CHANNEL)
    assert utils.webhook_updates_validator("wa-app-secret", request.body, request.headers["X-Hub-Signature-256"])


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"X-Hub-Signature-256": "sha256=" + "0" * 64},
        {"X-Hub-Signature": "sha1=abc"},  # the legacy header alone does not count
        {"X-Hub-Signature-256": h.meta_signature("another-secret", b"{}")},
    ],
)
def test_verify_rejects_bad_or_missing_signature_with_401(headers: dict[str, str]) -> None:
    with pytest.raises(Unauthorized) as err:
        WA.verify(h.make_request(b"{}", headers), CHANNEL)
    assert err.value.status == 401


def test_verify_rejects_tampered_body() -> None:
    request = h.meta_request(CHANNEL, envelope(value([ALL_TYPES[0]])))
    tampered = h.make_request(request.body.replace(b"color", b"colour"), dict(request.headers))
    with pytest.raises(Unauthorized):
        WA.verify(tampered, CHANNEL)


# --- parsing ------------------------------------------------------------------------------------------


def parse(payload: object) -> list[Any]:
    request = h.meta_request(CHANNEL, payload)
    WA.verify(request, CHANNEL)
    return WA.parse(request, CHANNEL)


def test_parse_every_message_type() -> None:
    events = parse(envelope(value(ALL_TYPES)))
    assert [e.event_id for e in events] == [m["id"] for m in ALL_TYPES]
    by_id = {e.event_id: e for e in events}
    assert all(isinstance(e, InboundEvent) and e.channel_type is ChannelType.WHATSAPP for e in events)
    assert by_id["wamid.TXT"].type is MessageType.TEXT
    assert by_id["wamid.TXT"].text == "Does it come in another color?"
    assert (by_id["wamid.BTN1"].type, by_id["wamid.BTN1"].payload, by_id["wamid.BTN1"].text) == (
        MessageType.BUTTON,
        "opt_yes",
        "Yes",
    )
    assert (by_id["wamid.LST1"].type, by_id["wamid.LST1"].payload) == (MessageType.BUTTON, "row_2")
    assert (by_id["wamid.TPL1"].type, by_id["wamid.TPL1"].payload) == (MessageType.BUTTON, "opt_no")
    image = by_id["wamid.IMG1"]
    assert image.type is MessageType.MEDIA
    assert image.text == "look"
    assert image.media == {"kind": "image", "id": "1003", "mime_type": "image/jpeg", "sha256": "x", "caption": "look"}
    for mid, kind in [("AUD1", "audio"), ("VID1", "video"), ("DOC1", "document"), ("STK1", "sticker")]:
        event = by_id[f"wamid.{mid}"]
        assert event.type is MessageType.MEDIA
        assert event.media is not None
        assert event.media["kind"] == kind
    assert by_id["wamid.DOC1"].media["filename"] == "a.pdf"  # type: ignore[index]
    assert by_id["wamid.LOC1"].type is MessageType.LOCATION
    assert by_id["wamid.LOC1"].media == {"latitude": 52.5, "longitude": 13.4, "name": "Home"}
    assert by_id["wamid.CON1"].type is MessageType.CONTACTS
    assert by_id["wamid.REA1"].type is MessageType.REACTION
    assert by_id["wamid.REA1"].media == {"message_id": "wamid.OUT0", "emoji": "\u2764"}
    assert by_id["wamid.UNS1"].type is MessageType.UNSUPPORTED


def test_identity_prefers_bsuid_and_keeps_phone_as_attribute() -> None:
    (event,) = parse(envelope(value([ALL_TYPES[0]])))
    assert event.conversation_key == event.contact_key == BSUID
    assert event.contact_name == "Ann"
    assert event.contact_attributes == {"phone": "16505551234"}
    assert event.timestamp == 1749416383.0
    assert event.reply_to == {"phone_number_id": PNID, "message_id": "wamid.TXT", "to": "16505551234"}


def test_username_user_without_phone_is_addressed_by_bsuid() -> None:
    v = value([{"from_user_id": BSUID, "id": "wamid.U1", "timestamp": "1", "type": "text", "text": {"body": "hi"}}])
    v["contacts"] = [{"profile": {"name": "Ann", "username": "ann"}, "user_id": BSUID}]
    (event,) = parse(envelope(v))
    assert event.conversation_key == BSUID
    assert event.contact_attributes == {"username": "ann"}
    assert event.reply_to == {"phone_number_id": PNID, "message_id": "wamid.U1", "recipient": BSUID}


def test_pre_bsuid_payload_keys_on_wa_id() -> None:
    v = value([{"from": "16505551234", "id": "wamid.OLD", "timestamp": "1", "type": "text", "text": {"body": "x"}}])
    v["contacts"] = [{"profile": {"name": "Ann"}, "wa_id": "16505551234"}]
    (event,) = parse(envelope(v))
    assert event.conversation_key == event.contact_key == "16505551234"


def test_batched_post_yields_every_entry_change_message_and_status() -> None:
    payload = envelope(value(ALL_TYPES[:2]), value(statuses=[status("wamid.OUT1", "sent")]))
    payload["entry"].append(copy.deepcopy(envelope(value(ALL_TYPES[2:4]))["entry"][0]))
    # A non-message field in the same post is acknowledged but yields nothing.
    payload["entry"][0]["changes"].append({"field": "message_template_status_update", "value": {"event": "APPROVED"}})
    events = parse(payload)
    assert [getattr(e, "event_id", None) or e.platform_message_id for e in events] == [
        "wamid.TXT",
        "wamid.BTN1",
        "wamid.OUT1",
        "wamid.LST1",
        "wamid.TPL1",
    ]


def test_non_message_fields_are_ignored() -> None:
    assert parse(envelope({"event": "APPROVED"}, field="message_template_status_update")) == []


def status(wamid: str, state: str, ts: str = "1749416388", **extra: Any) -> dict[str, Any]:
    return {"id": wamid, "status": state, "timestamp": ts, "recipient_id": "16505551234", **extra}


def test_statuses_out_of_order_and_failed() -> None:
    failed_error = {
        "code": 131047,
        "title": "Re-engagement message",
        "message": "Re-engagement message",
        "error_data": {"details": "More than 24 hours have passed since the customer last replied."},
    }
    statuses = [
        status("wamid.OUT1", "read", "1749416390"),
        status("wamid.OUT1", "delivered", "1749416389", conversation={"id": "c", "origin": {"type": "service"}}),
        status("wamid.OUT1", "sent", "1749416388"),
        status("wamid.OUT2", "failed", "1749416387", errors=[failed_error]),
        status("wamid.OUT3", "played", "1749416391"),
        status("wamid.OUT4", "deleted", "1749416392"),  # unknown states are skipped
    ]
    events = parse(envelope(value(statuses=statuses)))
    assert all(isinstance(e, StatusEvent) for e in events)
    assert [(e.platform_message_id, e.status) for e in events] == [
        ("wamid.OUT1", DeliveryStatus.READ),
        ("wamid.OUT1", DeliveryStatus.DELIVERED),
        ("wamid.OUT1", DeliveryStatus.SENT),
        ("wamid.OUT2", DeliveryStatus.FAILED),
        ("wamid.OUT3", DeliveryStatus.READ),
    ]
    assert events[0].timestamp == 1749416390.0
    assert events[0].conversation_key == BSUID  # from the status webhook's contacts[] (BSUID era)
    assert (events[3].error_code, events[3].error) == ("131047", failed_error["error_data"]["details"])


def test_status_without_contacts_keys_on_recipient_id() -> None:
    v = value(statuses=[status("wamid.OUT1", "delivered")])
    del v["contacts"]
    (event,) = parse(envelope(v))
    assert event.conversation_key == "16505551234"


def test_pywa_parses_the_same_payload() -> None:
    """Cross-check the fixtures: an independent parser sees the same ids and payloads."""
    from pywa import WhatsApp

    wa = WhatsApp(phone_id=PNID, token="x", server=None, verify_token="wa-verify", app_secret="wa-app-secret")
    seen: list[tuple[str, str]] = []
    wa.on_message()(lambda _, m: seen.append(("message", m.id)))
    wa.on_callback_button()(lambda _, b: seen.append(("button", b.data)))
    wa.on_callback_selection()(lambda _, s: seen.append(("selection", s.data)))
    wa.on_message_status()(lambda _, s: seen.append(("status", s.id)))
    # pywa reads only the first message of a change, so each goes in its own post.
    payloads = [envelope(value([m])) for m in ALL_TYPES[:4]]
    payloads.append(envelope(value(statuses=[status("wamid.OUT1", "delivered")])))
    for payload in payloads:
        wa.webhook_update_handler(h.dumps(payload))
    assert seen == [
        ("message", "wamid.TXT"),
        ("button", "opt_yes"),
        ("selection", "row_2"),
        ("button", "opt_no"),
        ("status", "wamid.OUT1"),
    ]
    ours = [parse(p)[0] for p in payloads]
    assert [e.event_id if isinstance(e, InboundEvent) else e.platform_message_id for e in ours] == [
        "wamid.TXT",
        "wamid.BTN1",
        "wamid.LST1",
        "wamid.TPL1",
        "wamid.OUT1",
    ]
    assert [e.payload for e in ours[1:4]] == ["opt_yes", "row_2", "opt_no"]


@pytest.mark.parametrize(
    "raw",
    [
        b"not json",
        b"[]",
        b'{"object": "whatsapp_business_account"}',
        h.dumps(envelope(value([{"from": "1", "timestamp": "1", "type": "text", "text": {"body": "no id"}}]))),
        h.dumps(envelope({"messages": [msg("wamid.X", "text", text={"body": "no metadata"})]})),
        h.dumps(envelope(value([msg("wamid.X", "text")]))),  # text without its body
    ],
)
def test_malformed_bodies(raw: bytes) -> None:
    with pytest.raises(MalformedBody):
        WA.parse(h.make_request(raw), CHANNEL)


# --- sending against the fake Graph API -----------------------------------------------------------------


async def test_send_text(fake: h.FakeServer, http: aiohttp.ClientSession) -> None:
    base, recorder = fake
    message = h.outbound(CHANNEL, "Hello", reply_to={"phone_number_id": PNID, "to": "16505551234"})
    result = await WA.send(http, f"{base}/graph", CHANNEL, message)
    assert result.platform_message_id
    assert result.platform_message_id.startswith("wamid.")
    (sent,) = recorder.sent("whatsapp")
    assert sent.path == f"/graph/{PNID}/messages"
    assert sent.body == {
        "messaging_product": "whatsapp",
        "recipient_type": "individual",
        "to": "16505551234",
        "type": "text",
        "text": {"body": "Hello", "preview_url": False},
    }


async def test_send_ids_are_unique_and_bsuid_uses_recipient(fake: h.FakeServer, http: aiohttp.ClientSession) -> None:
    base, recorder = fake
    message = h.outbound(CHANNEL, "Hi", reply_to={"phone_number_id": PNID, "recipient": BSUID})
    ids = {(await WA.send(http, f"{base}/graph", CHANNEL, message)).platform_message_id for _ in range(5)}
    assert len(ids) == 5
    assert all(r.body["recipient"] == BSUID and "to" not in r.body for r in recorder.sent("whatsapp"))


async def test_send_reply_buttons(fake: h.FakeServer, http: aiohttp.ClientSession) -> None:
    base, recorder = fake
    buttons = (Button("opt_yes", "Yes"), Button("opt_no", "No, and this title is far too long"))
    message = h.outbound(CHANNEL, "Pick", buttons=buttons, reply_to={"phone_number_id": PNID, "to": "1"})
    await WA.send(http, f"{base}/graph", CHANNEL, message)
    (sent,) = recorder.sent("whatsapp", ok=True)
    interactive = sent.body["interactive"]
    assert interactive["type"] == "button"
    assert interactive["body"] == {"text": "Pick"}
    titles = [b["reply"]["title"] for b in interactive["action"]["buttons"]]
    assert titles == ["Yes", "No, and this title i"]
    assert all(len(t) <= 20 for t in titles)


async def test_send_more_than_three_buttons_becomes_a_list(fake: h.FakeServer, http: aiohttp.ClientSession) -> None:
    base, recorder = fake
    buttons = tuple(Button(f"b{i}", f"Option {i}") for i in range(5))
    message = h.outbound(CHANNEL, "Pick", buttons=buttons, reply_to={"phone_number_id": PNID, "to": "1"})
    await WA.send(http, f"{base}/graph", CHANNEL, message)
    (sent,) = recorder.sent("whatsapp", ok=True)
    rows = sent.body["interactive"]["action"]["sections"][0]["rows"]
    assert sent.body["interactive"]["type"] == "list"
    assert [r["id"] for r in rows] == [f"b{i}" for i in range(5)]


async def test_send_uses_bearer_token(fake: h.FakeServer, http: aiohttp.ClientSession) -> None:
    base, _recorder = fake
    no_token = h.make_channel(ChannelType.WHATSAPP)
    no_token.secrets["access_token"] = ""
    with pytest.raises(SendError) as err:
        await WA.send(http, f"{base}/graph", no_token, h.outbound(no_token, reply_to={"to": "1"}))
    assert (err.value.code, err.value.retryable) == ("190", False)


@pytest.mark.parametrize(
    ("fault", "code", "retryable", "retry_after"),
    [
        (Fault("whatsapp", status=429), "130429", True, 1.0),
        (Fault("whatsapp", status=400, error_code=131056), "131056", True, 6.0),
        (Fault("whatsapp", status=429, error_code=130429, retry_after=7), "130429", True, 7.0),
        (Fault("whatsapp", status=500), "1", True, None),
        (Fault("whatsapp", status=503), "2", True, None),
        (Fault("whatsapp", status=400, error_code=131047), "131047", False, None),
        (Fault("whatsapp", status=400, error_code=131026), "131026", False, None),
        (Fault("whatsapp", status=401, error_code=190), "190", False, None),
        (Fault("whatsapp", status=403), "10", False, None),
    ],
)
async def test_send_errors_are_classified(
    fake: h.FakeServer,
    http: aiohttp.ClientSession,
    fault: Fault,
    code: str,
    retryable: bool,
    retry_after: float | None,
) -> None:
    base, recorder = fake
    recorder.add_fault(fault)
    message = h.outbound(CHANNEL, reply_to={"phone_number_id": PNID, "to": "16505551234"})
    with pytest.raises(SendError) as err:
        await WA.send(http, f"{base}/graph", CHANNEL, message)
    assert (err.value.code, err.value.retryable, err.value.retry_after) == (code, retryable, retry_after)
    # The fault was used up: the next send goes through.
    assert (await WA.send(http, f"{base}/graph", CHANNEL, message)).platform_message_id


async def test_send_network_error_is_retryable(http: aiohttp.ClientSession, unused_tcp_port: int) -> None:
    message = h.outbound(CHANNEL, reply_to={"phone_number_id": PNID, "to": "1"})
    with pytest.raises(SendError) as err:
        await WA.send(http, f"http://127.0.0.1:{unused_tcp_port}/graph", CHANNEL, message)
    assert (err.value.code, err.value.retryable) == ("network", True)


async def test_answer_callback_is_a_no_op(http: aiohttp.ClientSession) -> None:
    message = h.outbound(CHANNEL, kind="answer_callback")
    assert (await WA.send(http, "http://127.0.0.1:1/graph", CHANNEL, message)).platform_message_id is None


# --- Graph error classification (engine.channels.meta, shared with Messenger) ---------------------------


@pytest.mark.parametrize(
    ("status", "body", "header", "expected"),
    [
        (400, {"error": {"code": 131000, "message": "Something went wrong"}}, None, ("131000", True, None)),
        (400, {"error": {"code": 131016}}, None, ("131016", True, None)),
        (400, {"error": {"code": 999, "is_transient": True}}, None, ("999", True, None)),
        (400, {"error": {"code": 4}}, None, ("4", True, 60.0)),
        (400, {"error": {"code": 80007}}, None, ("80007", True, 60.0)),
        (400, {"error": {"code": 131057}}, None, ("131057", True, 60.0)),
        (400, {"error": {"code": 131056}}, "12", ("131056", True, 12.0)),
        (429, {"error": {"code": 12345}}, None, ("12345", True, 1.0)),
        (400, {"error": {"code": 100, "error_subcode": 2494010}}, None, ("100", False, None)),
        (400, {"error": {"code": 131051}}, None, ("131051", False, None)),
        (400, {"error": {"code": 368}}, None, ("368", False, None)),
        (400, {"error": {"code": 131048}}, None, ("131048", False, None)),
        (502, None, None, ("502", True, None)),
        (404, "<html>", None, ("404", False, None)),
    ],
)
def test_classify_graph_errors(status: int, body: object, header: str | None, expected: tuple) -> None:
    from engine.channels import meta

    error = meta.classify_error(status, body, header)
    assert (error.code, error.retryable, error.retry_after) == expected


def test_registry_serves_every_platform() -> None:
    from engine import channels
    from engine.channels.messenger import MessengerChannel
    from engine.channels.slack import SlackChannel
    from engine.channels.telegram import TelegramChannel

    assert isinstance(channels.get(ChannelType.WHATSAPP), WhatsAppChannel)
    assert isinstance(channels.get(ChannelType.MESSENGER), MessengerChannel)
    assert channels.get(ChannelType.INSTAGRAM) is channels.get(ChannelType.MESSENGER)
    assert isinstance(channels.get(ChannelType.SLACK), SlackChannel)
    assert isinstance(channels.get(ChannelType.TELEGRAM), TelegramChannel)
