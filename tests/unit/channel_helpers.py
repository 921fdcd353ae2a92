"""Helpers for the channel tests: channels, requests, independent signers, the in-process fake server.

Signatures are computed here with hmac/hashlib directly, never through the engine's own helpers,
so a bug in the engine's signing code cannot hide behind the same bug in the test.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
from aiohttp import web
from aiohttp.test_utils import TestServer
from multidict import CIMultiDict

from engine.channels.base import WebhookRequest
from engine.fake_platforms import RECORDER, Recorder, create_app
from engine.models import ChannelInfo, ChannelType, OutboundMessage

SECRETS: dict[ChannelType, dict[str, str]] = {
    ChannelType.TELEGRAM: {"bot_token": "123456:TEST-token_x", "secret_token": "tg-secret_1"},
    ChannelType.WHATSAPP: {"access_token": "EAAG-wa", "app_secret": "wa-app-secret", "verify_token": "wa-verify"},
    ChannelType.MESSENGER: {"page_token": "EAAG-page", "app_secret": "fb-app-secret", "verify_token": "fb-verify"},
    ChannelType.INSTAGRAM: {"page_token": "EAAG-ig", "app_secret": "ig-app-secret", "verify_token": "ig-verify"},
    ChannelType.SLACK: {"bot_token": "xoxb-test", "signing_secret": "8f742231b10e8888abcd99yyyzzz85a5"},
}
EXTERNAL_IDS = {
    ChannelType.TELEGRAM: "123456",
    ChannelType.WHATSAPP: "106540352242922",
    ChannelType.MESSENGER: "PAGE1",
    ChannelType.INSTAGRAM: "IGACCOUNT1",
    ChannelType.SLACK: "T0001",
}


def make_channel(channel_type: ChannelType, **config: Any) -> ChannelInfo:
    return ChannelInfo(
        id=f"ch-{channel_type.value}",
        tenant_id="tenant-1",
        bot_id=None,
        type=channel_type,
        external_id=EXTERNAL_IDS[channel_type],
        secrets=dict(SECRETS[channel_type]),
        config=config,
    )


def make_request(
    body: bytes = b"",
    headers: dict[str, str] | None = None,
    *,
    method: str = "POST",
    query: dict[str, str] | None = None,
) -> WebhookRequest:
    return WebhookRequest(method=method, headers=CIMultiDict(headers or {}), query=query or {}, body=body)


def dumps(obj: object) -> bytes:
    # Meta and Slack send escaped unicode (json.dumps' default), so synthetic bodies look the same.
    return json.dumps(obj).encode()


def meta_signature(app_secret: str, raw: bytes) -> str:
    return "sha256=" + hmac.new(app_secret.encode(), raw, hashlib.sha256).hexdigest()


def meta_request(channel: ChannelInfo, payload: object) -> WebhookRequest:
    raw = dumps(payload)
    return make_request(raw, {"X-Hub-Signature-256": meta_signature(channel.secrets["app_secret"], raw)})


def outbound(channel: ChannelInfo, text: str = "Hello", **kw: Any) -> OutboundMessage:
    fields: dict[str, Any] = {
        "id": "out-1",
        "created_at": 0.0,
        "tenant_id": channel.tenant_id,
        "channel_id": channel.id,
        "channel_type": channel.type,
        "conversation_id": "conv-1",
        "conversation_key": "key-1",
        "text": text,
    }
    fields.update(kw)
    return OutboundMessage(**fields)


FakeServer = tuple[str, Recorder]


async def fake_server(
    aiohttp_server: Callable[[web.Application], Awaitable[TestServer]],
) -> AsyncIterator[FakeServer]:
    """The fake platforms on aiohttp's in-process test server: (base URL, recorder)."""
    server = await aiohttp_server(create_app())
    yield str(server.make_url("")).rstrip("/"), server.app[RECORDER]


async def client_session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session:
        yield session
