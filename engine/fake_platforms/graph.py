"""Fake Meta Graph API: /graph/{id}/messages for WhatsApp Cloud API and Messenger/Instagram bodies."""

from __future__ import annotations

import time
import uuid
from typing import Any

from aiohttp import web

from engine.fake_platforms.recorder import RECORDER, Recorded, read_body, respond

_GRAPH_MESSAGES = {
    1: "An unknown error occurred",
    2: "Service temporarily unavailable",
    4: "(#4) Application request limit reached",
    10: "(#10) Application does not have permission for this action",
    100: "(#100) Invalid parameter",
    190: "Error validating access token: Session has expired",
    368: "(#368) Temporarily blocked for policies violations",
    551: "This person isn't available right now.",
    613: "(#613) Calls to this api have exceeded the rate limit.",
    130429: "(#130429) Rate limit hit",
    131000: "Something went wrong",
    131009: "(#131009) Parameter value is not valid",
    131026: "(#131026) Message undeliverable",
    131030: "(#131030) Recipient phone number not in allowed list",
    131047: "(#131047) Re-engagement message",
    131056: "(#131056) (Business Account, Consumer Account) pair rate limit hit",
}
# The code a fault gets when it names only an HTTP status.
_GRAPH_DEFAULT_CODE = {
    "whatsapp": {429: 130429, 400: 100, 401: 190, 403: 10, 500: 1, 503: 2},
    "messenger": {429: 613, 400: 100, 401: 190, 403: 10, 500: 1, 503: 2},
}
_GRAPH_TRANSIENT = {1, 2, 131000, 131016}


def _graph_error(platform: str, code: int, details: str | None = None) -> dict[str, Any]:
    message = _GRAPH_MESSAGES.get(code, f"(#{code}) Error")
    error: dict[str, Any] = {
        "message": message,
        "type": "OAuthException",
        "code": code,
        "fbtrace_id": f"A{uuid.uuid4().hex[:22]}",
        "is_transient": code in _GRAPH_TRANSIENT,
    }
    if platform == "whatsapp":
        error["error_data"] = {"messaging_product": "whatsapp", "details": details or message}
    return {"error": error}


def _graph_chat(platform: str, body: dict[str, Any]) -> str | None:
    if platform == "whatsapp":
        chat = body.get("to") or body.get("recipient")
    else:
        recipient = body.get("recipient")
        chat = recipient.get("id") if isinstance(recipient, dict) else None
    return str(chat) if chat else None


def _whatsapp_result(body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    if body.get("status") == "read":
        if not body.get("message_id"):
            return 400, _graph_error("whatsapp", 100, "message_id is required")
        return 200, {"success": True}
    to, recipient = body.get("to"), body.get("recipient")
    if not to and not recipient:
        return 400, _graph_error("whatsapp", 100, "The parameter to is required.")
    kind = body.get("type", "text")
    if kind == "text":
        text = (body.get("text") or {}).get("body") or ""
        if not text or len(text) > 4096:
            return 400, _graph_error("whatsapp", 131009, "text.body must be 1-4096 characters")
    elif kind == "interactive":
        interactive = body.get("interactive") or {}
        action = interactive.get("action") or {}
        if interactive.get("type") == "button":
            buttons = action.get("buttons") or []
            if not 1 <= len(buttons) <= 3 or any(len(b["reply"]["title"]) > 20 for b in buttons):
                return 400, _graph_error("whatsapp", 131009, "1-3 buttons with titles of at most 20 characters")
        elif interactive.get("type") == "list":
            rows = [r for section in action.get("sections") or [] for r in section.get("rows") or []]
            if not 1 <= len(rows) <= 10 or any(len(r["title"]) > 24 for r in rows):
                return 400, _graph_error("whatsapp", 131009, "1-10 rows with titles of at most 24 characters")
    contact = {"input": to, "wa_id": to} if to else {"input": recipient, "user_id": recipient}
    wamid = f"wamid.HBgL{uuid.uuid4().hex.upper()}"
    return 200, {
        "messaging_product": "whatsapp",
        "contacts": [contact],
        "messages": [{"id": wamid, "message_status": "accepted"}],
    }


def _messenger_result(body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    recipient = body["recipient"] if isinstance(body.get("recipient"), dict) else {}
    message = body["message"] if isinstance(body.get("message"), dict) else {}
    if not recipient.get("id"):
        return 400, _graph_error("messenger", 100, "recipient.id is required")
    if not message.get("text") and not message.get("attachment"):
        return 400, _graph_error("messenger", 100, "message must have text or an attachment")
    if len(message.get("text") or "") > 2000 or len(message.get("quick_replies") or []) > 13:
        return 400, _graph_error("messenger", 100, "text <= 2000 characters, <= 13 quick replies")
    return 200, {"recipient_id": recipient["id"], "message_id": f"m_{uuid.uuid4().hex}"}


async def graph_messages(request: web.Request) -> web.Response:
    recorder = request.app[RECORDER]
    try:
        body, malformed = await read_body(request), False
    except ValueError:
        body, malformed = {}, True
    platform = "whatsapp" if body.get("messaging_product") == "whatsapp" else "messenger"
    chat = _graph_chat(platform, body)
    item = Recorded(platform, "messages", request.path, chat, body, time.monotonic())
    recorder.record(item)
    fault = recorder.take_fault(platform, chat)
    auth = request.headers.get("Authorization", "")
    headers: dict[str, str] | None = None
    if not auth.startswith("Bearer ") or not auth[7:].strip():
        status, answer = 401, _graph_error(platform, 190)
    elif fault is not None and fault.status is not None and fault.status >= 400:
        status = fault.status
        default = _GRAPH_DEFAULT_CODE[platform].get(status, 1 if status >= 500 else 100)
        answer = _graph_error(platform, int(fault.error_code) if fault.error_code is not None else default)
        if fault.retry_after is not None:
            headers = {"Retry-After": str(int(fault.retry_after))}
    elif malformed:
        status, answer = 400, _graph_error(platform, 100, "body is not a JSON object")
    elif platform == "whatsapp":
        status, answer = _whatsapp_result(body)
    else:
        status, answer = _messenger_result(body)
    return await respond(recorder, item, fault, status, answer, ok=status == 200, headers=headers)
