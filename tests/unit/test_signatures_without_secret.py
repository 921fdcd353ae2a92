"""Signature checks. A channel stored without its signing secret (missing or empty) refuses every
request: one signed with an empty key, one signed with some other key, one without a signature. An
empty secret must never turn into a key that anybody can sign with. Every refusal names its reason."""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Callable

import pytest

from engine.channels.base import Unauthorized, WebhookRequest
from engine.channels.messenger import MessengerChannel
from engine.channels.slack import SlackChannel
from engine.channels.telegram import TelegramChannel
from engine.channels.whatsapp import WhatsAppChannel
from engine.models import ChannelInfo, ChannelType
from tests.unit import channel_helpers as h

BODY = b'{"object": "whatsapp_business_account", "entry": []}'
META = [ChannelType.WHATSAPP, ChannelType.MESSENGER, ChannelType.INSTAGRAM]


def _without(channel_type: ChannelType, secret: str, empty: bool) -> ChannelInfo:
    channel = h.make_channel(channel_type)
    if empty:
        channel.secrets[secret] = ""
    else:
        del channel.secrets[secret]
    return channel


def _meta_signed(key: str) -> WebhookRequest:
    return h.make_request(BODY, {"X-Hub-Signature-256": h.meta_signature(key, BODY)})


def _slack_signed(key: str) -> WebhookRequest:
    timestamp = str(int(time.time()))
    digest = hmac.new(key.encode(), f"v0:{timestamp}:".encode() + BODY, hashlib.sha256).hexdigest()
    return h.make_request(BODY, {"X-Slack-Request-Timestamp": timestamp, "X-Slack-Signature": f"v0={digest}"})


@pytest.mark.parametrize("empty", [False, True], ids=["missing", "empty"])
@pytest.mark.parametrize("channel_type", META)
@pytest.mark.parametrize("key", ["", "some-other-secret"])
def test_a_meta_channel_without_app_secret_refuses_every_signed_body(
    channel_type: ChannelType, empty: bool, key: str
) -> None:
    platform = WhatsAppChannel() if channel_type is ChannelType.WHATSAPP else MessengerChannel()
    channel = _without(channel_type, "app_secret", empty)
    with pytest.raises(Unauthorized) as refused:
        platform.verify(_meta_signed(key), channel)
    assert refused.value.status == 401
    with pytest.raises(Unauthorized):
        platform.verify(h.make_request(BODY), channel)  # and an unsigned one


def test_the_same_meta_body_signed_with_the_configured_secret_passes() -> None:
    """The control: the refusals above are about the missing secret, not about the request."""
    channel = h.make_channel(ChannelType.WHATSAPP)
    WhatsAppChannel().verify(_meta_signed(channel.secrets["app_secret"]), channel)


@pytest.mark.parametrize("empty", [False, True], ids=["missing", "empty"])
def test_a_slack_channel_without_signing_secret_refuses_a_body_signed_with_an_empty_key(empty: bool) -> None:
    channel = _without(ChannelType.SLACK, "signing_secret", empty)
    with pytest.raises(Unauthorized):
        SlackChannel().verify(_slack_signed(""), channel)
    SlackChannel().verify(
        _slack_signed(h.SECRETS[ChannelType.SLACK]["signing_secret"]), h.make_channel(ChannelType.SLACK)
    )


@pytest.mark.parametrize("empty", [False, True], ids=["missing", "empty"])
def test_a_telegram_channel_without_secret_token_refuses_an_empty_token(empty: bool) -> None:
    channel = _without(ChannelType.TELEGRAM, "secret_token", empty)
    for given in ({"X-Telegram-Bot-Api-Secret-Token": ""}, {}):
        with pytest.raises(Unauthorized):
            TelegramChannel().verify(h.make_request(b'{"update_id": 1}', given), channel)


def _refusal(verify: Callable[[], None]) -> tuple[int, str]:
    with pytest.raises(Unauthorized) as refused:
        verify()
    return refused.value.status, str(refused.value)


def test_every_refusal_names_its_reason() -> None:
    """The reason is what the receiver logs for a refused webhook (never a secret)."""
    wa, channel = WhatsAppChannel(), h.make_channel(ChannelType.WHATSAPP)
    assert _refusal(lambda: wa.verify(h.make_request(BODY), channel)) == (401, "missing X-Hub-Signature-256")
    assert _refusal(lambda: wa.verify(_meta_signed("wrong"), channel)) == (
        401,
        "X-Hub-Signature-256 does not match the body",
    )
    handshake = {"hub.mode": "subscribe", "hub.verify_token": "wrong", "hub.challenge": "42"}
    assert _refusal(lambda: wa.handshake(h.make_request(method="GET", query=handshake), channel)) == (
        403,
        "hub.mode / hub.verify_token do not match",
    )

    slack, sl = SlackChannel(), h.make_channel(ChannelType.SLACK)
    signed = _slack_signed(h.SECRETS[ChannelType.SLACK]["signing_secret"])
    missing = "missing X-Slack-Signature or X-Slack-Request-Timestamp"
    only_timestamp = h.make_request(BODY, {"X-Slack-Request-Timestamp": signed.headers["X-Slack-Request-Timestamp"]})
    only_signature = h.make_request(BODY, {"X-Slack-Signature": signed.headers["X-Slack-Signature"]})
    assert _refusal(lambda: slack.verify(only_timestamp, sl)) == (401, missing)
    assert _refusal(lambda: slack.verify(only_signature, sl)) == (401, missing)
    not_a_number = h.make_request(BODY, {**signed.headers, "X-Slack-Request-Timestamp": "soon"})
    assert _refusal(lambda: slack.verify(not_a_number, sl)) == (401, "X-Slack-Request-Timestamp is not an integer")
    stale = h.make_request(BODY, {**signed.headers, "X-Slack-Request-Timestamp": str(int(time.time()) - 600)})
    assert _refusal(lambda: slack.verify(stale, sl)) == (401, "X-Slack-Request-Timestamp outside the 5 minute window")
    assert _refusal(lambda: slack.verify(_slack_signed("wrong"), sl)) == (
        401,
        "X-Slack-Signature does not match the body",
    )

    tg, tc = TelegramChannel(), h.make_channel(ChannelType.TELEGRAM)
    wrong = h.make_request(b"{}", {"X-Telegram-Bot-Api-Secret-Token": "wrong"})
    assert _refusal(lambda: tg.verify(wrong, tc)) == (401, "missing or wrong X-Telegram-Bot-Api-Secret-Token")


def test_a_handshake_without_a_challenge_answers_an_empty_body() -> None:
    channel = h.make_channel(ChannelType.WHATSAPP)
    query = {"hub.mode": "subscribe", "hub.verify_token": channel.secrets["verify_token"]}
    reply = WhatsAppChannel().handshake(h.make_request(method="GET", query=query), channel)
    assert reply is not None
    assert (reply.status, reply.text) == (200, "")
