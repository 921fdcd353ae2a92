"""Shared by the load-test tests: a tenant on all five platforms whose bot answers every message
with exactly one reply, and an engine whose send APIs point at the load tester's sink."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from engine.loadtest.sink import MatchingRecorder, running_sink
from engine.settings import Settings
from tests.harness import Running, running_engine

TENANT = """
tenant: {slug: loadco, name: Load Co}
bots:
  - {slug: bot, name: Bot, echo: false}
channels:
  - {slug: tg, type: telegram, bot: bot, external_id: load_bot,
     secrets: {bot_token: "123456:LOAD-TOKEN", secret_token: "tg-load-secret"}}
  - {slug: wa, type: whatsapp, bot: bot, external_id: "1065400001",
     secrets: {access_token: "EAAG-LOAD", app_secret: "wa-app-secret", verify_token: "v"}}
  - {slug: fb, type: messenger, bot: bot, external_id: "1040000001",
     secrets: {page_token: "EAAG-PAGE", app_secret: "fb-app-secret", verify_token: "v"}}
  - {slug: ig, type: instagram, bot: bot, external_id: "1784140001",
     secrets: {page_token: "EAAG-IG", app_secret: "ig-app-secret", verify_token: "v"}}
  - {slug: sl, type: slack, bot: bot, external_id: T0LOAD,
     secrets: {bot_token: "xoxb-load", signing_secret: "slack-signing-secret"}, config: {bot_user_id: UBOT}}
flows:
  - bot: bot
    slug: main
    name: One answer
    default: true
    nodes:
      - {id: answer, type: message, text: "Got it.", next: done}
      - {id: done, type: end}
"""
NO_LIMITS = {
    kind: {"chat_rate": 10_000, "chat_burst": 10_000, "channel_rate": 100_000, "channel_burst": 100_000}
    for kind in ("telegram", "whatsapp", "messenger", "instagram", "slack")
}


@contextlib.asynccontextmanager
async def engine_with_sink(settings: Settings, **update: object) -> AsyncIterator[tuple[Running, MatchingRecorder]]:
    """The engine (receiver, one worker, one sender in this loop) sending to a fresh sink."""
    recorder = MatchingRecorder()
    async with running_sink(recorder, "127.0.0.1", 0) as sink:
        settings = settings.model_copy(
            update={
                "telegram_api_base": f"{sink}/telegram",
                "graph_api_base": f"{sink}/graph",
                "slack_api_base": f"{sink}/slack/api",
                "rate_limits": NO_LIMITS,
                **update,
            }
        )
        async with running_engine(settings) as engine:
            yield engine, recorder
