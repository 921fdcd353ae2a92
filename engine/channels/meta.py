"""Mechanics shared by every Meta platform (WhatsApp Cloud API, Messenger, Instagram).

The GET hub.* subscription handshake, the X-Hub-Signature-256 HMAC over the raw body, and the Graph
API's error format, classified into retryable and permanent SendErrors (channels.md §1.7).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from typing import Any

import aiohttp

from engine.channels.base import Unauthorized, WebhookReply, WebhookRequest, post, same_secret
from engine.models import ChannelInfo, SendError

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Hub-Signature-256"

# Temporary server-side trouble: retry with backoff.
TRANSIENT_CODES = frozenset({1, 2, 131000, 131016})
# Throughput limits: retry, but only after slowing down. Graph gives no Retry-After, so these are
# the waits we assume: the pair rate is ~1 message per 6 s to one user; app/account limits reset slowly.
THROTTLE_WAIT: dict[int, float] = {
    4: 60.0,  # app call rate
    613: 60.0,  # Messenger/Instagram call rate
    80007: 60.0,  # WABA rate
    130429: 1.0,  # throughput (80 mps per number)
    131056: 6.0,  # pair rate: delay only that recipient
    131057: 60.0,  # number in maintenance / upgrade
}


def handshake(request: WebhookRequest, channel: ChannelInfo) -> WebhookReply | None:
    """Answer the GET subscription challenge with hub.challenge verbatim; 403 on a wrong verify token."""
    if request.method.upper() != "GET":
        return None
    expected = channel.secrets.get("verify_token", "")
    given = request.query.get("hub.verify_token", "")
    if request.query.get("hub.mode") != "subscribe" or not same_secret(given, expected):
        raise Unauthorized("hub.mode / hub.verify_token do not match", status=403)
    return WebhookReply(200, request.query.get("hub.challenge", ""))


def signature(app_secret: str, body: bytes) -> str:
    """The X-Hub-Signature-256 value Meta sends for body."""
    return "sha256=" + hmac.new(app_secret.encode(), body, hashlib.sha256).hexdigest()


def verify(request: WebhookRequest, channel: ChannelInfo) -> None:
    """Raise Unauthorized (401) unless X-Hub-Signature-256 is the app secret's HMAC of the raw body."""
    app_secret = channel.secrets.get("app_secret", "")
    given = request.headers.get(SIGNATURE_HEADER, "")
    if not app_secret or not given:
        raise Unauthorized("missing X-Hub-Signature-256")
    if not same_secret(given.strip().lower(), signature(app_secret, request.body)):
        raise Unauthorized("X-Hub-Signature-256 does not match the body")


def classify_error(status: int, body: object, retry_after_header: str | None = None) -> SendError:
    """Map a Graph error answer onto SendError; branch on error.code, not on HTTP status or text."""
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict):
        retryable = status >= 500 or status == 429
        return SendError(f"graph answered HTTP {status}", code=str(status), retryable=retryable)
    code = error.get("code")
    message = str(error.get("message") or f"graph error {code}")
    header_wait = _seconds(retry_after_header)
    if code in THROTTLE_WAIT:
        wait = header_wait if header_wait is not None else THROTTLE_WAIT[code]
        return SendError(message, code=str(code), retryable=True, retry_after=wait)
    retryable = status >= 500 or code in TRANSIENT_CODES or error.get("is_transient") is True
    if status == 429:  # a 429 without a throttling code is still a throttle
        return SendError(message, code=str(code), retryable=True, retry_after=header_wait or 1.0)
    return SendError(message, code=str(code if code is not None else status), retryable=retryable)


def _seconds(value: str | None) -> float | None:
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


async def post_graph(http: aiohttp.ClientSession, url: str, token: str, body: dict[str, Any]) -> dict[str, Any]:
    """POST one Graph call with a Bearer token; return the JSON answer or raise SendError.

    Graph has no idempotency key (§1.8): a read timeout may already have sent the message, so it is
    reported with code "timeout" and the sender decides how cautiously to retry it.
    """
    answer = await post(http, "graph", url, json=body, headers={"Authorization": f"Bearer {token}"})
    if answer.status == 200 and isinstance(answer.data, dict):
        return answer.data
    raise classify_error(answer.status, answer.data, answer.retry_after)
