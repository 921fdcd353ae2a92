"""The receiver's link to the broker: publish inbound events with confirms, or say it can't.

The receiver must answer 200 only for what the broker has confirmed. While the broker is down this
link reports unavailable (the receiver answers 503 and the platform retries); the robust connection
comes back by itself, and the first connect is retried in the background so a receiver can start
before its broker.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from aio_pika.abc import AbstractExchange, AbstractRobustConnection

from engine.bus.connection import connect, make_message, open_channel
from engine.bus.topology import Topology, declare_topology
from engine.models import ConversationCommand, InboundEvent, StatusEvent

log = logging.getLogger(__name__)


class BrokerUnavailable(Exception):
    """Nothing can be published right now (down, not yet connected, or the confirm timed out)."""


class Publisher:
    def __init__(self, url: str, topology: Topology, name: str, timeout: float) -> None:
        self._url = url
        self._topology = topology
        self._name = name
        self._timeout = timeout
        self._connection: AbstractRobustConnection | None = None
        self._exchange: AbstractExchange | None = None
        self._connector: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._connector = asyncio.create_task(self._connect_forever(), name="broker-connect")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(self._connector), timeout=self._timeout)

    async def _connect_forever(self) -> None:
        delay = 0.5
        while True:
            try:
                connection = await connect(self._url, self._name)
                channel = await open_channel(connection)
                await declare_topology(channel, self._topology)
                self._exchange = await channel.get_exchange(self._topology.inbound)
                self._connection = connection
                log.info("receiver connected to the broker")
                return
            except Exception as exc:  # any failure to reach the broker: try again, never crash
                log.warning("broker not reachable (%s); retrying in %.1fs", type(exc).__name__, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)

    @property
    def ready(self) -> bool:
        return self._connection is not None and not self._connection.is_closed and self._exchange is not None

    async def publish(self, events: list[InboundEvent | StatusEvent | ConversationCommand]) -> None:
        """Publish all events, persistent, and wait for every confirm; raise BrokerUnavailable."""
        exchange = self._exchange
        if exchange is None or not self.ready:
            raise BrokerUnavailable("not connected to the broker")
        publishes = []
        for event in events:
            shard = self._topology.shard_of(event.tenant_id, event.channel_id, event.conversation_key)
            if isinstance(event, InboundEvent):
                key = event.event_id
            elif isinstance(event, StatusEvent):
                key = event.platform_message_id
            else:
                key = f"{event.action}:{event.issued_at}"
            message = make_message(event, message_id=f"{event.channel_id}:{key}", correlation_id=event.conversation_key)
            publishes.append(exchange.publish(message, routing_key=str(shard), mandatory=True))
        try:
            async with asyncio.timeout(self._timeout):
                await asyncio.gather(*publishes)
        except Exception as exc:  # broker gone, channel closed, nack, return or timeout: all mean 503
            raise BrokerUnavailable(f"publish failed: {type(exc).__name__}") from exc

    async def close(self) -> None:
        if self._connector is not None:
            self._connector.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._connector
        if self._connection is not None:
            await self._connection.close()
