"""The API's link to the broker: commands into a conversation's inbound shard (confirmed), and the
tenant's dead letters (listed and replayed from the shared dead-letter queue, only the caller's)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from typing import Any

from aio_pika.abc import AbstractChannel, AbstractIncomingMessage, AbstractRobustConnection

from engine.bus import envelope
from engine.bus.connection import connect, copy_of, make_message, open_channel
from engine.bus.consumer import ATTEMPT_HEADER, ORIGIN_HEADER, REASON_HEADER
from engine.bus.topology import Topology
from engine.models import ConversationCommand, stable_id

log = logging.getLogger(__name__)
SCAN_LIMIT = 1000  # dead letters looked at per request, whatever the tenant


class BrokerUnavailable(Exception):
    """The broker did not confirm (down, not connected, or too slow)."""


@dataclass(frozen=True, slots=True)
class DeadLetter:
    id: str
    queue: str
    reason: str
    kind: str
    conversation_key: str | None


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _describe(message: AbstractIncomingMessage, tenant_id: str) -> DeadLetter | None:
    """The dead letter if it belongs to the tenant; one that cannot be read belongs to nobody."""
    try:
        item: envelope.Item = envelope.decode(message.body)
    except envelope.EnvelopeError:
        try:  # replies travel several to a message, all of one tenant
            item = envelope.decode_replies(message.body)[0]
        except (envelope.EnvelopeError, IndexError):
            return None
    if item.tenant_id != tenant_id:
        return None
    headers = dict(message.headers or {})
    deaths = headers.get("x-death") or [{}]
    death = deaths[0] if isinstance(deaths, list) and deaths and isinstance(deaths[0], dict) else {}
    queue = _text(headers.get(ORIGIN_HEADER) or death.get("queue") or "")
    reason = _text(headers.get(REASON_HEADER) or death.get("reason") or "unknown")
    key = message.message_id or message.body.hex()[:64]
    kind = envelope.KINDS[type(item)]
    return DeadLetter(str(stable_id("dead-letter", key)), queue, reason, kind, getattr(item, "conversation_key", None))


class ApiBroker:
    def __init__(self, url: str, topology: Topology, timeout: float) -> None:
        self._url = url
        self._topology = topology
        self._timeout = timeout
        self._connection: AbstractRobustConnection | None = None
        self._channel: AbstractChannel | None = None
        self._lock = asyncio.Lock()

    async def _publisher(self) -> AbstractChannel:
        async with self._lock:
            if self._connection is None:
                self._connection = await connect(self._url, "engine-admin-api")
            if self._channel is None or self._channel.is_closed:
                self._channel = await open_channel(self._connection)
            return self._channel

    async def send_command(self, command: ConversationCommand, message_id: str, conversation_id: str) -> None:
        """Publish to the conversation's shard, persistent, and wait for the confirm."""
        try:
            async with asyncio.timeout(self._timeout):
                channel = await self._publisher()
                exchange = await channel.get_exchange(self._topology.inbound, ensure=False)
                shard = self._topology.shard_of(command.tenant_id, command.channel_id, command.conversation_key)
                message = make_message(command, message_id=message_id, correlation_id=conversation_id)
                await exchange.publish(message, routing_key=str(shard), mandatory=True)
        except Exception as exc:  # not connected, a nack, a return or the timeout: the caller answers 503
            raise BrokerUnavailable(f"the broker did not confirm ({type(exc).__name__})") from exc

    async def dead_letters(self, tenant_id: str, limit: int, replay: str | None = None) -> list[DeadLetter]:
        """The tenant's dead letters (at most `limit`); with replay=<id>, that one is published back
        to the queue it came from and removed. Letters looked at but not replayed go back to the
        dead-letter queue when the channel closes (unacked)."""
        try:
            channel = await (await self._connected()).channel(publisher_confirms=True)
        except Exception as exc:
            raise BrokerUnavailable(f"no broker ({type(exc).__name__})") from exc
        found: list[DeadLetter] = []
        try:
            queue = await channel.declare_queue(self._topology.dead, passive=True)
            for _ in range(SCAN_LIMIT):
                message = await queue.get(no_ack=False, fail=False)
                if message is None or len(found) >= limit:
                    break
                letter = _describe(message, tenant_id)
                if letter is None:
                    continue
                if replay is None:
                    found.append(letter)
                elif letter.id == replay and letter.queue:
                    headers = {k: v for k, v in (message.headers or {}).items()
                               if k not in (REASON_HEADER, ORIGIN_HEADER, ATTEMPT_HEADER, "x-death")}  # fmt: skip
                    await channel.default_exchange.publish(copy_of(message, headers), routing_key=letter.queue)
                    await message.ack()
                    found.append(letter)
                    break
        finally:
            with contextlib.suppress(Exception):
                await channel.close()
        return found

    async def _connected(self) -> AbstractRobustConnection:
        _ = await self._publisher()  # connects if needed
        assert self._connection is not None
        return self._connection

    async def close(self) -> None:
        if self._connection is not None:
            await self._connection.close()
