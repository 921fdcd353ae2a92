"""Fake Telegram Bot API: /telegram/bot{token}/{method}, JSON, form or query-string bodies."""

from __future__ import annotations

import re
import time
from typing import Any

from aiohttp import web

from engine.fake_platforms.recorder import RECORDER, Recorded, ids, read_body, respond

_TOKEN = re.compile(r"^\d+:[A-Za-z0-9_-]+$")
_TG_ERRORS = {
    400: "Bad Request: chat not found",
    401: "Unauthorized",
    403: "Forbidden: bot was blocked by the user",
    404: "Not Found",
    409: "Conflict: can't use getUpdates method while webhook is active",
}


def _tg_error(code: int, description: str, **parameters: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"ok": False, "error_code": code, "description": description}
    if parameters:
        body["parameters"] = parameters
    return body


def _tg_bot(token: str) -> dict[str, Any]:
    bot_id = int(token.split(":", 1)[0])
    return {"id": bot_id, "is_bot": True, "first_name": "FakeBot", "username": f"fake_{bot_id}_bot"}


def _tg_chat_id(value: Any) -> int | str:
    text = str(value)
    return int(text) if re.fullmatch(r"-?\d+", text) else text


def _tg_result(method: str, token: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    if method == "getMe":
        return 200, {"ok": True, "result": _tg_bot(token)}
    if method in ("setWebhook", "deleteWebhook"):
        if method == "setWebhook" and not body.get("url"):
            return 400, _tg_error(400, "Bad Request: bad webhook: URL must be provided")
        return 200, {"ok": True, "result": True, "description": "Webhook was set"}
    if method == "answerCallbackQuery":
        if not body.get("callback_query_id"):
            return 400, _tg_error(400, "Bad Request: query is too old and response timeout expired")
        return 200, {"ok": True, "result": True}
    if method == "sendMessage":
        if body.get("chat_id") in (None, ""):
            return 400, _tg_error(400, "Bad Request: chat_id is empty")
        text = str(body.get("text") or "")
        if not text:
            return 400, _tg_error(400, "Bad Request: message text is empty")
        if len(text) > 4096:
            return 400, _tg_error(400, "Bad Request: message is too long")
        chat_id = _tg_chat_id(body["chat_id"])
        chat_type = "private" if isinstance(chat_id, int) and chat_id > 0 else "supergroup"
        message: dict[str, Any] = {
            "message_id": next(ids),
            "date": int(time.time()),
            "chat": {"id": chat_id, "type": chat_type},
            "from": _tg_bot(token),
            "text": text,
        }
        if isinstance(body.get("reply_markup"), dict):
            message["reply_markup"] = body["reply_markup"]
        return 200, {"ok": True, "result": message}
    return 404, _tg_error(404, "Not Found")


async def telegram_method(request: web.Request) -> web.Response:
    recorder = request.app[RECORDER]
    token, method = request.match_info["token"], request.match_info["method"]
    try:
        body = await read_body(request)
    except ValueError:
        body = {}
    chat = str(body["chat_id"]) if body.get("chat_id") not in (None, "") else None
    item = Recorded("telegram", method, request.path, chat, body, time.monotonic())
    recorder.record(item)
    fault = recorder.take_fault("telegram", chat)
    if not _TOKEN.match(token):
        status, answer = 401, _tg_error(401, "Unauthorized")
    elif fault is not None and fault.status == 429:
        retry_after = int(fault.retry_after if fault.retry_after is not None else 1)
        status = 429
        answer = _tg_error(429, f"Too Many Requests: retry after {retry_after}", retry_after=retry_after)
    elif fault is not None and fault.migrate_to_chat_id is not None:
        status = 400
        description = "Bad Request: group chat was upgraded to a supergroup chat"
        answer = _tg_error(400, description, migrate_to_chat_id=fault.migrate_to_chat_id)
    elif fault is not None and fault.status is not None and fault.status >= 400:
        status = fault.status
        default = _TG_ERRORS.get(status, "Internal Server Error" if status >= 500 else "Bad Request")
        answer = _tg_error(status, str(fault.error_code) if isinstance(fault.error_code, str) else default)
    else:
        status, answer = _tg_result(method, token, body)
    return await respond(recorder, item, fault, status, answer, ok=status == 200)
