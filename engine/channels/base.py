"""The channel interface: every platform module has the same two halves.

Inbound: handshake (subscription challenges), verify (signature over the raw body), parse (raw body
-> normalized events). Outbound: send (canonical OutboundMessage -> the platform's send API).
Modules never touch the bus or the database; the receiver and the sender do that around them.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import aiohttp
import orjson

from engine import metrics
from engine.models import (
    ChannelInfo,
    ChannelType,
    ConversationCommand,
    InboundEvent,
    OutboundMessage,
    SendError,
    SendResult,
    StatusEvent,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class WebhookRequest:
    """The transport-neutral view of one webhook call. headers must be case-insensitive
    (aiohttp's CIMultiDictProxy is); body is the raw bytes exactly as received."""

    method: str
    headers: Mapping[str, str]
    query: Mapping[str, str]
    body: bytes


@dataclass(frozen=True, slots=True)
class WebhookReply:
    """A reply the platform expects instead of the plain 200 (a challenge echo)."""

    status: int
    text: str
    content_type: str = "text/plain"


class Unauthorized(Exception):
    """Bad or missing signature / secret: 401 (or the given status), nothing published."""

    def __init__(self, reason: str, status: int = 401) -> None:
        super().__init__(reason)
        self.status = status


class MalformedBody(Exception):
    """The body is not the JSON (or form) the platform sends: 400."""


Event = InboundEvent | StatusEvent | ConversationCommand  # commands: WhatsApp user_preferences


class Channel(Protocol):
    types: tuple[ChannelType, ...]

    def handshake(self, request: WebhookRequest, channel: ChannelInfo) -> WebhookReply | None:
        """Answer a subscription challenge (Meta GET, Slack url_verification), or None.
        Called for GET before anything else, and for POST after verify()."""

    def verify(self, request: WebhookRequest, channel: ChannelInfo) -> None:
        """Raise Unauthorized unless the request carries the channel's valid signature."""

    def parse(self, request: WebhookRequest, channel: ChannelInfo) -> list[Event]:
        """Normalize a verified body into events; raise MalformedBody if it cannot be read.
        Event types the engine does not handle are left out (the receiver counts them)."""

    async def send(
        self, http: aiohttp.ClientSession, base_url: str, channel: ChannelInfo, message: OutboundMessage
    ) -> SendResult:
        """Deliver one message; raise models.SendError (retryable or not) when the platform refuses."""


def same_secret(given: str, expected: str) -> bool:
    """Constant-time comparison of a header value with a secret. A header that is not valid UTF-8
    (aiohttp hands it over with surrogate escapes) is simply not the secret: 401, never 500."""
    try:
        given_bytes = given.encode()
    except UnicodeEncodeError:
        return False
    return bool(expected) and hmac.compare_digest(given_bytes, expected.encode())


def bound(channel: ChannelInfo, *account_ids: object) -> bool:
    """Whether a body's platform account id (WhatsApp phone_number_id, Meta recipient page / account
    id, Slack team_id or api_app_id) is the channel's external_id. Several channels can share one
    app secret, so a valid signature alone does not say which number or page a body is for. A channel
    without an external_id accepts any. A body for another account is dropped and counted
    (engine_events_unbound_total), never stored under this channel or answered with its token."""
    if not channel.external_id:
        return True
    if any(str(a) == channel.external_id for a in account_ids if a is not None):
        return True
    metrics.EVENTS_UNBOUND.labels(channel.type.value).inc()
    log.warning("webhook event for another account dropped (channel %s)", channel.id)
    return False


def load_json(body: bytes) -> object:
    """Parse a JSON body or raise MalformedBody (shared by every JSON-speaking platform)."""
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise MalformedBody(f"invalid JSON: {exc}") from None


@dataclass(frozen=True, slots=True)
class HttpAnswer:
    status: int
    retry_after: str | None  # the Retry-After header, as sent
    data: Any  # the parsed JSON body, or None when there was none or it was not JSON


async def post(http: aiohttp.ClientSession, platform: str, url: str, **kwargs: Any) -> HttpAnswer:
    """POST to a platform's send API. Transport failures become retryable SendErrors: "timeout"
    (the platform may have acted: none of them takes an idempotency key) or "network"; answering
    with an error status is left to the platform module to classify."""
    try:
        async with http.post(url, **kwargs) as resp:
            status, retry_after = resp.status, resp.headers.get("Retry-After")
            raw = await resp.read()
    except TimeoutError as exc:
        raise SendError(f"{platform} timed out", code="timeout", retryable=True) from exc
    except aiohttp.ClientError as exc:
        raise SendError(f"{platform} unreachable: {type(exc).__name__}", code="network", retryable=True) from exc
    try:
        data = orjson.loads(raw) if raw else None
    except orjson.JSONDecodeError:
        data = None
    return HttpAnswer(status, retry_after, data)
