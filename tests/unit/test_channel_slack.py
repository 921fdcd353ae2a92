from __future__ import annotations

import hashlib
import hmac
import json
import urllib.parse
from typing import Any

import aiohttp
import pytest
from slack_sdk.errors import SlackApiError
from slack_sdk.models.blocks import ActionsBlock, ButtonElement, SectionBlock
from slack_sdk.signature import Clock, SignatureVerifier
from slack_sdk.web.async_client import AsyncWebClient

from engine.channels.base import MalformedBody, Unauthorized
from engine.channels.slack import SlackChannel
from engine.fake_platforms import Fault
from engine.models import Button, ChannelType, MessageType, SendError
from tests.unit import channel_helpers as h

fake = pytest.fixture(h.fake_server)
http = pytest.fixture(h.client_session)

NOW = 1_700_000_100
SECRET = "8f742231b10e8888abcd99yyyzzz85a5"
CHANNEL = h.make_channel(ChannelType.SLACK)
THREADED = h.make_channel(ChannelType.SLACK, threads=True)
SLACK = SlackChannel(clock=lambda: NOW)


class FixedClock(Clock):
    def now(self) -> float:
        return NOW


def sign(raw: bytes, ts: int = NOW, secret: str = SECRET) -> dict[str, str]:
    base = f"v0:{ts}:".encode() + raw
    digest = hmac.new(secret.encode(), base, hashlib.sha256).hexdigest()
    return {"X-Slack-Request-Timestamp": str(ts), "X-Slack-Signature": f"v0={digest}"}


def event_request(event: dict[str, Any], **envelope: Any) -> h.WebhookRequest:
    doc = {
        "token": "legacy",
        "team_id": "T0001",
        "api_app_id": "A0001",
        "type": "event_callback",
        "event_id": "Ev0001",
        "event_time": 1700000000,
        "authorizations": [{"team_id": "T0001", "user_id": "UBOT", "is_bot": True}],
        "event": event,
        **envelope,
    }
    raw = h.dumps(doc)
    return h.make_request(raw, {"Content-Type": "application/json", **sign(raw)})


def message(**kw: Any) -> dict[str, Any]:
    return {
        "type": "message",
        "channel": "C0001",
        "channel_type": "channel",
        "user": "U0001",
        "text": "hello",
        "ts": "1700000000.000100",
        "event_ts": "1700000000.000100",
        "team": "T0001",
        **kw,
    }


def parse(request: h.WebhookRequest, channel: h.ChannelInfo = CHANNEL) -> list[Any]:
    SLACK.verify(request, channel)
    return SLACK.parse(request, channel)


# --- signatures -----------------------------------------------------------------------------------------


def test_documented_check_vector() -> None:
    raw = (
        b"token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&channel_id=G8PSS9T3V"
        b"&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&command=%2Fwebhook-collect&text="
        b"&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN"
        b"&trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c"
    )
    headers = {
        "X-Slack-Request-Timestamp": "1531420618",
        "X-Slack-Signature": "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503",
    }
    SlackChannel(clock=lambda: 1531420618 + 10).verify(h.make_request(raw, headers), CHANNEL)


def test_verify_agrees_with_slack_sdk() -> None:
    raw = h.dumps({"type": "event_callback", "event": message(text="gr\u00fc\u00dfe")})
    verifier = SignatureVerifier(SECRET, clock=FixedClock())
    headers = sign(raw)
    assert verifier.generate_signature(timestamp=str(NOW), body=raw) == headers["X-Slack-Signature"]
    assert verifier.is_valid_request(raw, {k.lower(): v for k, v in headers.items()})
    SLACK.verify(h.make_request(raw, headers), CHANNEL)


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"X-Slack-Request-Timestamp": str(NOW)},
        {"X-Slack-Request-Timestamp": "soon", "X-Slack-Signature": "v0=00"},
        sign(b"{}", secret="another-secret"),
        sign(b"{}", ts=NOW - 301),  # stale
        sign(b"{}", ts=NOW + 301),  # from the future: the window holds both ways
        {**sign(b"{}"), "X-Slack-Request-Timestamp": str(NOW - 1)},  # timestamp not the signed one
    ],
)
def test_verify_rejects_with_401(headers: dict[str, str]) -> None:
    with pytest.raises(Unauthorized) as err:
        SLACK.verify(h.make_request(b"{}", headers), CHANNEL)
    assert err.value.status == 401
    if "X-Slack-Signature" in headers and headers["X-Slack-Request-Timestamp"].isdigit():
        verifier = SignatureVerifier(SECRET, clock=FixedClock())
        assert not verifier.is_valid(b"{}", headers["X-Slack-Request-Timestamp"], headers["X-Slack-Signature"])


def test_verify_accepts_the_edges_of_the_window() -> None:
    for ts in (NOW - 300, NOW + 300):
        SLACK.verify(h.make_request(b"{}", sign(b"{}", ts=ts)), CHANNEL)


def test_url_verification_answers_the_challenge_after_verify() -> None:
    raw = h.dumps({"token": "legacy", "challenge": "3eZbrw1aBm2r", "type": "url_verification"})
    request = h.make_request(raw, {"Content-Type": "application/json", **sign(raw)})
    SLACK.verify(request, CHANNEL)
    reply = SLACK.handshake(request, CHANNEL)
    assert reply is not None
    assert (reply.status, reply.text) == (200, "3eZbrw1aBm2r")
    assert SLACK.parse(request, CHANNEL) == []


def test_no_handshake_for_events_or_get() -> None:
    assert SLACK.handshake(event_request(message()), CHANNEL) is None
    assert SLACK.handshake(h.make_request(method="GET"), CHANNEL) is None


# --- events ---------------------------------------------------------------------------------------------


def test_channel_message_is_keyed_by_channel() -> None:
    (event,) = parse(event_request(message()))
    assert (event.type, event.text, event.contact_key) == (MessageType.TEXT, "hello", "U0001")
    assert event.event_id == "C0001:1700000000.000100"
    assert event.conversation_key == "C0001"
    assert event.reply_to == {"channel": "C0001"}
    assert event.raw["event_id"] == "Ev0001"
    assert event.contact_attributes == {"team": "T0001"}


def test_thread_reply_is_its_own_conversation() -> None:
    (event,) = parse(event_request(message(ts="1700000009.000200", thread_ts="1700000000.000100")))
    assert event.conversation_key == "C0001:1700000000.000100"
    assert event.reply_to == {"channel": "C0001", "thread_ts": "1700000000.000100"}


def test_threads_config_opens_a_thread_per_top_level_message() -> None:
    (event,) = parse(event_request(message()), THREADED)
    assert event.conversation_key == "C0001:1700000000.000100"
    assert event.reply_to == {"channel": "C0001", "thread_ts": "1700000000.000100"}
    (dm,) = parse(event_request(message(channel="D0001", channel_type="im")), THREADED)
    assert dm.conversation_key == "D0001"
    assert dm.reply_to == {"channel": "D0001"}


def test_retry_and_app_mention_of_one_message_share_an_event_id() -> None:
    (first,) = parse(event_request(message()))
    (retry,) = parse(event_request(message(), event_id="Ev0001"))
    (mention,) = parse(event_request(message(type="app_mention"), event_id="Ev0002"))
    assert first.event_id == retry.event_id == mention.event_id


def test_file_share_is_media() -> None:
    files = [{"id": "F0001", "name": "cat.png", "mimetype": "image/png", "url_private": "https://files/cat.png"}]
    (event,) = parse(event_request(message(subtype="file_share", text="", files=files, channel_type="im")))
    assert event.type is MessageType.MEDIA
    assert event.text is None
    assert event.media == {
        "kind": "file",
        "id": "F0001",
        "mime_type": "image/png",
        "name": "cat.png",
        "url": "https://files/cat.png",
    }


@pytest.mark.parametrize(
    "event",
    [
        message(bot_id="B0001"),
        message(subtype="bot_message", user=None, bot_id="B1"),
        message(user="UBOT"),  # our own bot, from authorizations[]
        message(subtype="message_changed", message={"text": "edited"}),
        message(subtype="message_deleted", deleted_ts="1"),
        message(subtype="channel_join"),
        {"type": "reaction_added", "user": "U0001", "item": {}},
    ],
)
def test_ignored_events(event: dict[str, Any]) -> None:
    assert parse(event_request(event)) == []


def test_bot_user_id_from_config() -> None:
    channel = h.make_channel(ChannelType.SLACK, bot_user_id="UMINE")
    assert parse(event_request(message(user="UMINE"), authorizations=[]), channel) == []


def block_actions(**kw: Any) -> dict[str, Any]:
    return {
        "type": "block_actions",
        "user": {"id": "U0001", "username": "ann", "team_id": "T0001"},
        "api_app_id": "A0001",
        "team": {"id": "T0001", "domain": "acme"},
        "channel": {"id": "C0001", "name": "general"},
        "container": {"type": "message", "message_ts": "1700000001.000200", "channel_id": "C0001"},
        "message": {"type": "message", "ts": "1700000001.000200", "text": "Pick one"},
        "trigger_id": "123.456.abc",
        "actions": [
            {
                "type": "button",
                "action_id": "0:opt_yes",
                "block_id": "b1",
                "value": "opt_yes",
                "text": {"type": "plain_text", "text": "Yes"},
                "action_ts": "1700000005.123456",
            }
        ],
        **kw,
    }


def form_request(payload: dict[str, Any]) -> h.WebhookRequest:
    raw = urllib.parse.urlencode({"payload": json.dumps(payload)}).encode()
    return h.make_request(raw, {"Content-Type": "application/x-www-form-urlencoded", **sign(raw)})


def test_button_click_is_a_button_event() -> None:
    (event,) = parse(form_request(block_actions()))
    assert (event.type, event.payload, event.text) == (MessageType.BUTTON, "opt_yes", "Yes")
    assert event.event_id == "action:U0001:1700000005.123456"
    assert (event.conversation_key, event.contact_key) == ("C0001", "U0001")
    assert event.reply_to == {"channel": "C0001"}
    assert SLACK.handshake(form_request(block_actions()), CHANNEL) is None


def test_button_click_in_a_thread_stays_in_the_thread() -> None:
    container = {"type": "message", "message_ts": "1700000001.000200", "channel_id": "C0001", "thread_ts": "1700.1"}
    (event,) = parse(form_request(block_actions(container=container)))
    assert event.conversation_key == "C0001:1700.1"
    assert event.reply_to == {"channel": "C0001", "thread_ts": "1700.1"}


def test_form_signature_covers_the_raw_form() -> None:
    request = form_request(block_actions())
    forged = h.make_request(request.body.replace(b"opt_yes", b"opt_nop"), dict(request.headers))
    with pytest.raises(Unauthorized):
        SLACK.verify(forged, CHANNEL)


def test_other_interactions_are_ignored() -> None:
    assert parse(form_request({"type": "view_submission", "user": {"id": "U1"}})) == []


@pytest.mark.parametrize(
    ("raw", "ctype"),
    [
        (b"nope", "application/json"),
        (b"[1]", "application/json"),
        (h.dumps({"type": "event_callback"}), "application/json"),
        (h.dumps({"type": "event_callback", "event": {"type": "message", "user": "U1"}}), "application/json"),
        (b"payload=%7Bbad", "application/x-www-form-urlencoded"),
        (b"other=1", "application/x-www-form-urlencoded"),
    ],
)
def test_malformed(raw: bytes, ctype: str) -> None:
    with pytest.raises(MalformedBody):
        SLACK.parse(h.make_request(raw, {"Content-Type": ctype}), CHANNEL)


# --- sending against the fake Web API -------------------------------------------------------------------


async def test_send_text_in_thread(fake: h.FakeServer, http: aiohttp.ClientSession) -> None:
    base, recorder = fake
    msg = h.outbound(CHANNEL, "Hi", reply_to={"channel": "C0001", "thread_ts": "1700.1"})
    first = await SLACK.send(http, f"{base}/slack/api", CHANNEL, msg)
    second = await SLACK.send(http, f"{base}/slack/api", CHANNEL, msg)
    assert first.platform_message_id
    assert first.platform_message_id != second.platform_message_id
    sent = recorder.sent("slack", method="chat.postMessage", chat="C0001", ok=True)
    assert sent[0].body == {"channel": "C0001", "text": "Hi", "thread_ts": "1700.1"}
    assert "warning" not in sent[0].response  # the charset was declared


async def test_send_buttons_as_blocks(fake: h.FakeServer, http: aiohttp.ClientSession) -> None:
    base, recorder = fake
    buttons = (Button("yes", "Yes"), Button("no", "No"))
    await SLACK.send(
        http, f"{base}/slack/api", CHANNEL, h.outbound(CHANNEL, "Pick", buttons=buttons, reply_to={"channel": "C1"})
    )
    (sent,) = recorder.sent("slack", ok=True)
    assert sent.body["text"] == "Pick"  # always present: the notification fallback
    expected = [
        SectionBlock(text={"type": "mrkdwn", "text": "Pick"}).to_dict(),
        ActionsBlock(
            block_id="buttons",
            elements=[
                ButtonElement(text="Yes", action_id="0:yes", value="yes"),
                ButtonElement(text="No", action_id="1:no", value="no"),
            ],
        ).to_dict(),
    ]
    assert sent.body["blocks"] == expected


@pytest.mark.parametrize(
    ("fault", "code", "retryable", "retry_after"),
    [
        (Fault("slack", status=429, retry_after=4), "ratelimited", True, 4.0),
        (Fault("slack", status=500), "service_unavailable", True, None),
        (Fault("slack", status=503, error_code="service_unavailable"), "service_unavailable", True, None),
        (Fault("slack", status=200, error_code="channel_not_found"), "channel_not_found", False, None),
        (Fault("slack", error_code="invalid_auth"), "invalid_auth", False, None),
        (Fault("slack", status=403), "not_in_channel", False, None),
        (Fault("slack", error_code="internal_error"), "internal_error", True, None),
        (Fault("slack", error_code="fatal_error"), "fatal_error", False, None),
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
    with pytest.raises(SendError) as err:
        await SLACK.send(http, f"{base}/slack/api", CHANNEL, h.outbound(CHANNEL, reply_to={"channel": "C1"}))
    assert (err.value.code, err.value.retryable, err.value.retry_after) == (code, retryable, retry_after)


async def test_bad_token(fake: h.FakeServer, http: aiohttp.ClientSession) -> None:
    base, _ = fake
    channel = h.make_channel(ChannelType.SLACK)
    channel.secrets["bot_token"] = "nope"
    with pytest.raises(SendError) as err:
        await SLACK.send(http, f"{base}/slack/api", channel, h.outbound(channel, reply_to={"channel": "C1"}))
    assert (err.value.code, err.value.retryable) == ("invalid_auth", False)


async def test_slack_sdk_client_against_the_fake(fake: h.FakeServer) -> None:
    base, recorder = fake
    client = AsyncWebClient(token="xoxb-test", base_url=f"{base}/slack/api/")
    auth = await client.auth_test()
    assert auth["user_id"] == "UFAKEBOT"
    posted = await client.chat_postMessage(channel="C0001", text="hi", thread_ts="1700.1")
    assert posted["ok"]
    assert posted["channel"] == "C0001"
    assert posted["message"]["thread_ts"] == "1700.1"
    recorder.add_fault(Fault("slack", chat="C0001", error_code="channel_not_found"))
    with pytest.raises(SlackApiError) as err:
        await client.chat_postMessage(channel="C0001", text="again")
    assert err.value.response["error"] == "channel_not_found"
    recorder.add_fault(Fault("slack", chat="C0001", status=429, retry_after=2))
    with pytest.raises(SlackApiError) as limited:
        await client.chat_postMessage(channel="C0001", text="fast")
    assert limited.value.response.status_code == 429
    assert limited.value.response.headers["Retry-After"] == "2"
