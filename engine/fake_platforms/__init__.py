"""Fake Telegram Bot API, Meta Graph (WhatsApp, Messenger/Instagram) and Slack Web API servers.

One aiohttp app that answers the send calls of every channel with the platform's own success and
error shapes, records every request, and injects faults (429s, 5xx, permanent errors, slowness)
for one chat or for all. Tests point the settings bases at it:

    telegram_api_base = http://HOST:PORT/telegram   (python-telegram-bot: base_url=.../telegram/bot)
    graph_api_base    = http://HOST:PORT/graph
    slack_api_base    = http://HOST:PORT/slack/api

and it serves a fake shop order API (/shop/api/orders/{number}) for the example bot's HTTP tool.

The recorder is reachable in-process as ``app[RECORDER]`` and over HTTP under ``/_fake/``.
"""

from __future__ import annotations

import logging
from dataclasses import asdict

from aiohttp import web

from engine.fake_platforms import shop
from engine.fake_platforms.graph import graph_messages
from engine.fake_platforms.recorder import PLATFORMS, RECORDER, Fault, Recorded, Recorder
from engine.fake_platforms.slack import slack_method
from engine.fake_platforms.telegram import telegram_method

__all__ = ["RECORDER", "Fault", "Recorded", "Recorder", "create_app", "main"]

log = logging.getLogger(__name__)


def _flag(value: str | None) -> bool | None:
    return None if value is None else value.lower() in ("1", "true", "yes")


async def list_sent(request: web.Request) -> web.Response:
    q = request.query
    items = request.app[RECORDER].sent(
        q.get("platform"), chat=q.get("chat"), method=q.get("method"), ok=_flag(q.get("ok"))
    )
    return web.json_response([r.to_dict() for r in items])


async def reset_sent(request: web.Request) -> web.Response:
    request.app[RECORDER].reset()
    return web.json_response({"ok": True})


async def add_fault(request: web.Request) -> web.Response:
    try:
        spec = await request.json()
        if spec.get("platform", "*") not in (*PLATFORMS, "*"):
            raise ValueError(f"platform must be one of {PLATFORMS} or '*'")
        if spec.get("chat") is not None:
            spec["chat"] = str(spec["chat"])
        fault = Fault(**spec)
    except (ValueError, TypeError, AttributeError) as exc:
        return web.json_response({"ok": False, "error": str(exc)}, status=400)
    request.app[RECORDER].add_fault(fault)
    return web.json_response({"ok": True, "fault": asdict(fault)})


async def list_faults(request: web.Request) -> web.Response:
    return web.json_response([asdict(f) for f in request.app[RECORDER].faults])


async def clear_faults(request: web.Request) -> web.Response:
    request.app[RECORDER].clear_faults()
    return web.json_response({"ok": True})


def create_app(recorder: Recorder | None = None) -> web.Application:
    """The fake platforms app; its recorder is app[RECORDER] (a new one unless given)."""
    app = web.Application(client_max_size=4 * 1024 * 1024)
    app[RECORDER] = recorder or Recorder()
    app.router.add_route("*", "/telegram/bot{token}/{method}", telegram_method)
    app.router.add_post("/graph/{node}/messages", graph_messages)
    app.router.add_post("/slack/api/{method}", slack_method)
    app.router.add_get("/shop/api/orders/{number}", shop.order)
    app.router.add_get("/_fake/sent", list_sent)
    app.router.add_delete("/_fake/sent", reset_sent)
    app.router.add_get("/_fake/faults", list_faults)
    app.router.add_post("/_fake/faults", add_fault)
    app.router.add_delete("/_fake/faults", clear_faults)
    return app


def main(host: str = "127.0.0.1", port: int = 8081) -> None:
    """Serve the fakes until interrupted (the `engine fake-platforms` command)."""
    log.info("fake platforms on http://%s:%d (telegram/, graph/, slack/api/, _fake/)", host, port)
    # No access log: Bot API paths carry the bot token.
    web.run_app(create_app(), host=host, port=port, access_log=None)
