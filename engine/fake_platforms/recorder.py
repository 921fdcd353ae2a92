"""The fakes' shared parts: what they record, the faults they inject, and body/answer helpers."""

from __future__ import annotations

import asyncio
import itertools
import json
from collections import deque
from dataclasses import asdict, dataclass, field
from typing import Any

import orjson
from aiohttp import web

PLATFORMS = ("telegram", "whatsapp", "messenger", "slack")
ids = itertools.count(1)  # process-wide, so ids stay unique across apps and chats


@dataclass(slots=True)
class Recorded:
    """One request the fake received. status/ok are filled in when it answers."""

    platform: str
    method: str  # sendMessage, messages, chat.postMessage, ...
    path: str
    chat: str | None  # Telegram chat_id, WhatsApp to/recipient, Messenger recipient.id, Slack channel
    body: dict[str, Any]
    received_at: float  # time.monotonic() on arrival
    status: int = 0
    ok: bool = False
    response: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(slots=True)
class Fault:
    """Answer the next `times` matching requests with `status` (None: succeed, after `delay`)."""

    platform: str = "*"
    chat: str | None = None
    status: int | None = None
    times: int | None = 1  # None: until cleared
    retry_after: float | None = None
    delay: float = 0.0
    error_code: int | str | None = None
    migrate_to_chat_id: int | None = None  # Telegram: the group became this supergroup

    def matches(self, platform: str, chat: str | None) -> bool:
        return self.platform in ("*", platform) and (self.chat is None or self.chat == chat)


class Recorder:
    """Every request the fake received (the newest max_requests of them, so a long benchmark run
    does not grow without bound), and the faults still armed."""

    def __init__(self, max_requests: int | None = 100_000) -> None:
        self.requests: deque[Recorded] = deque(maxlen=max_requests)
        self.faults: list[Fault] = []
        self._changed = asyncio.Event()

    def record(self, item: Recorded) -> None:
        self.requests.append(item)
        self._changed.set()

    def sent(
        self,
        platform: str | None = None,
        *,
        chat: str | None = None,
        method: str | None = None,
        ok: bool | None = None,
    ) -> list[Recorded]:
        return [
            r
            for r in self.requests
            if (platform is None or r.platform == platform)
            and (chat is None or r.chat == chat)
            and (method is None or r.method == method)
            and (ok is None or r.ok == ok)
        ]

    async def wait_for(self, count: int, **filters: Any) -> list[Recorded]:
        """Wait until at least `count` answered requests match `filters` (see sent()).
        Never times out by itself: wrap it in asyncio.timeout()."""
        while True:
            found = [r for r in self.sent(**filters) if r.status]
            if len(found) >= count:
                return found
            self._changed.clear()
            await self._changed.wait()

    def reset(self) -> None:
        self.requests.clear()

    def add_fault(self, fault: Fault) -> None:
        self.faults.append(fault)

    def clear_faults(self) -> None:
        self.faults.clear()

    def take_fault(self, platform: str, chat: str | None) -> Fault | None:
        for fault in self.faults:
            if fault.matches(platform, chat):
                if fault.times is not None:
                    fault.times -= 1
                    if fault.times <= 0:
                        self.faults.remove(fault)
                return fault
        return None

    def answered(self, item: Recorded, status: int, body: dict[str, Any], ok: bool) -> None:
        item.status, item.response, item.ok = status, body, ok
        self._changed.set()


RECORDER = web.AppKey("recorder", Recorder)


def _maybe_json(value: str) -> Any:
    # Form posts (python-telegram-bot) carry nested objects such as reply_markup as JSON strings.
    if value[:1] in ("{", "["):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


async def read_body(request: web.Request) -> dict[str, Any]:
    """JSON, form-urlencoded, multipart or query string, as the platforms accept; ValueError if bad."""
    data: dict[str, Any] = dict(request.query)
    if request.content_type == "application/json":
        raw = await request.read()
        if raw.strip():
            parsed = orjson.loads(raw)
            if not isinstance(parsed, dict):
                raise ValueError("JSON body is not an object")
            data.update(parsed)
    elif request.content_type in ("application/x-www-form-urlencoded", "multipart/form-data"):
        for key, value in (await request.post()).items():
            data[key] = _maybe_json(value) if isinstance(value, str) else {"filename": getattr(value, "filename", None)}
    return data


async def respond(
    recorder: Recorder,
    item: Recorded,
    fault: Fault | None,
    status: int,
    body: dict[str, Any],
    *,
    ok: bool,
    headers: dict[str, str] | None = None,
) -> web.Response:
    if fault is not None and fault.delay:
        await asyncio.sleep(fault.delay)  # a slow platform: the sender's timeout must cope
    recorder.answered(item, status, body, ok)
    return web.Response(body=orjson.dumps(body), status=status, headers=headers, content_type="application/json")
