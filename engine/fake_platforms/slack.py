"""Fake Slack Web API: /slack/api/{method} (chat.postMessage, auth.test); errors as HTTP 200 ok:false."""

from __future__ import annotations

import time
from typing import Any

from aiohttp import web

from engine.fake_platforms.recorder import RECORDER, Recorded, read_body, respond

_SLACK_ERRORS = {
    400: "invalid_arguments",
    401: "invalid_auth",
    403: "not_in_channel",
    404: "channel_not_found",
}
_SLACK_BOT = {"user_id": "UFAKEBOT", "bot_id": "BFAKEBOT", "team_id": "TFAKE"}


class _SlackTs:
    """Slack message ts ("seconds.micro"): strictly increasing, so unique per process."""

    last = 0

    @classmethod
    def next(cls) -> str:
        cls.last = max(int(time.time() * 1_000_000), cls.last + 1)
        return f"{cls.last // 1_000_000}.{cls.last % 1_000_000:06d}"


def _slack_result(method: str, body: dict[str, Any], charset: bool) -> dict[str, Any]:
    if method == "auth.test":
        return {"ok": True, "url": "https://fake.slack.com/", "team": "Fake", "user": "fakebot", **_SLACK_BOT}
    if method != "chat.postMessage":
        return {"ok": False, "error": "unknown_method"}
    channel = body.get("channel")
    if not channel:
        return {"ok": False, "error": "channel_not_found"}
    blocks = body.get("blocks")
    if blocks is not None and not isinstance(blocks, list):
        return {"ok": False, "error": "invalid_blocks"}
    if not body.get("text") and not blocks:
        return {"ok": False, "error": "no_text"}
    ts = _SlackTs.next()
    message: dict[str, Any] = {"type": "message", "user": "UFAKEBOT", "bot_id": "BFAKEBOT", "ts": ts}
    message["text"] = body.get("text") or ""
    for key in ("thread_ts", "blocks"):
        if body.get(key):
            message[key] = body[key]
    answer: dict[str, Any] = {"ok": True, "channel": channel, "ts": ts, "message": message}
    if not charset:
        answer["warning"] = "missing_charset"
        answer["response_metadata"] = {"warnings": ["missing_charset"]}
    return answer


async def slack_method(request: web.Request) -> web.Response:
    recorder = request.app[RECORDER]
    method = request.match_info["method"]
    try:
        body, malformed = await read_body(request), False
    except ValueError:
        body, malformed = {}, True
    chat = str(body["channel"]) if body.get("channel") else None
    item = Recorded("slack", method, request.path, chat, body, time.monotonic())
    recorder.record(item)
    fault = recorder.take_fault("slack", chat)
    auth = request.headers.get("Authorization", "")
    token = auth[7:].strip() if auth.startswith("Bearer ") else str(body.get("token") or "")
    status, headers = 200, None
    if fault is not None and fault.status == 429:
        status, answer = 429, {"ok": False, "error": "ratelimited"}
        headers = {"Retry-After": str(int(fault.retry_after if fault.retry_after is not None else 1))}
    elif fault is not None and fault.status is not None and fault.status >= 500:
        status, answer = fault.status, {"ok": False, "error": str(fault.error_code or "service_unavailable")}
    elif fault is not None and (fault.error_code is not None or (fault.status or 0) >= 400):
        # Slack's API errors are HTTP 200 with ok:false; the HTTP status only picks a default error.
        answer = {"ok": False, "error": str(fault.error_code or _SLACK_ERRORS.get(fault.status or 400))}
    elif not token:
        answer = {"ok": False, "error": "not_authed"}
    elif not token.startswith("xox"):
        answer = {"ok": False, "error": "invalid_auth"}
    elif malformed:
        answer = {"ok": False, "error": "invalid_json"}
    else:
        answer = _slack_result(method, body, "charset" in request.headers.get("Content-Type", "").lower())
    return await respond(recorder, item, fault, status, answer, ok=bool(answer.get("ok")), headers=headers)
