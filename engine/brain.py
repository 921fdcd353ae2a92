"""What the worker does with one inbound message: decide the replies and the state changes.

The spine's brain greets and echoes with the bot's configured text. Routing rules, flows and tools
replace it (issue: the engine's brain) behind the same interface: respond() mutates the conversation
and contact in place and returns an Outcome; it never writes to the database itself (the worker
stages everything into its batched flush) and never blocks other conversations.
"""

from __future__ import annotations

import logging

import aiohttp
import asyncpg

from engine.models import Contact, Conversation, InboundEvent, MessageType, Outcome, Reply
from engine.settings import Settings

log = logging.getLogger(__name__)

SELECT_BOT_CONFIG = "SELECT bot_id::text, welcome_text, echo FROM bot_configuration"
SELECT_CHANNEL_BOTS = "SELECT id::text, bot_id::text FROM channels"


class Brain:
    def __init__(self, pool: asyncpg.Pool, http: aiohttp.ClientSession, settings: Settings) -> None:
        self.pool = pool
        self.http = http
        self.settings = settings
        self._bots: dict[str, tuple[str, bool]] = {}
        self._channel_bots: dict[str, str | None] = {}

    async def start(self) -> None:
        await self.reload()

    async def stop(self) -> None:
        return None

    async def reload(self) -> None:
        rows = await self.pool.fetch(SELECT_BOT_CONFIG)
        self._bots = {r["bot_id"]: (r["welcome_text"], r["echo"]) for r in rows}
        self._channel_bots = {r["id"]: r["bot_id"] for r in await self.pool.fetch(SELECT_CHANNEL_BOTS)}

    async def respond(self, event: InboundEvent, conversation: Conversation, contact: Contact) -> Outcome:
        if conversation.bot_id is None:
            conversation.bot_id = self._channel_bots.get(conversation.channel_id)
        welcome, echo = self._bots.get(conversation.bot_id or "", ("Hello {name}!", True))
        text = welcome.replace("{name}", contact.name or "there")
        if echo and event.type is MessageType.TEXT and event.text:
            text = f"{text} You said: {event.text}"
        return Outcome(replies=[Reply(text=text)])
