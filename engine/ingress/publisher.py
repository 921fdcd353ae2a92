"""The receiver's link to the broker: publish inbound events with confirms, or say it can't.

The receiver must answer 200 only for what the broker has confirmed. While the broker is down this
link reports unavailable (the receiver answers 503 and the platform retries); the robust connection
comes back by itself, and the first connect is retried in the background so a receiver can start
before its broker.

Each shard has at most one publish awaiting its confirm. Events for the shard that arrive meanwhile
wait and go together in the next message (envelope kind "events"), so under load one broker message
and one confirm carry many webhooks. An event for an idle shard waits `linger` (a few ms) for
company first: at moderate rates most events find their shard idle, and each broker message costs
the receiver, the broker and the worker about as much as the events in it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from dataclasses import dataclass, field
from typing import NamedTuple

from aio_pika.abc import AbstractExchange, AbstractRobustConnection

from engine import metrics
from engine.bus import envelope
from engine.bus.connection import connect, events_message, open_channel
from engine.bus.topology import Topology, declare_topology
from engine.models import ConversationCommand, InboundEvent, StatusEvent

log = logging.getLogger(__name__)

EVENTS_PER_MESSAGE = 100
BYTES_PER_MESSAGE = 1024 * 1024  # an event larger than this still goes, alone


class BrokerUnavailable(Exception):
    """Nothing can be published right now (down, not yet connected, or the confirm timed out)."""


class _Pending(NamedTuple):
    """One event waiting for its shard's publish in flight to be confirmed."""

    body: bytes
    message_id: str
    conversation_key: str
    confirm: asyncio.Future[None]  # the request's: set once the message holding it is confirmed


@dataclass(slots=True)
class _Waiting:
    """A shard's events waiting to be published, and whether a publish of it awaits its confirm."""

    events: deque[_Pending] = field(default_factory=deque)
    busy: bool = False

    def take(self) -> list[_Pending]:
        """The next message's events: in order, at most EVENTS_PER_MESSAGE and BYTES_PER_MESSAGE
        (the first always); those whose request gave up (timed out) are dropped, the platform sends
        them again."""
        batch: list[_Pending] = []
        size = 0
        while self.events and len(batch) < EVENTS_PER_MESSAGE:
            size += len(self.events[0].body)
            if batch and size > BYTES_PER_MESSAGE:
                break
            batch.append(self.events.popleft())
        return [event for event in batch if not event.confirm.done()]


def _answer(batch: list[_Pending], error: BaseException | None) -> None:
    """Tell each request still waiting how its message's publish went."""
    for event in batch:
        if event.confirm.done():
            continue
        if error is None:
            event.confirm.set_result(None)
        else:
            event.confirm.set_exception(error)


class Publisher:
    def __init__(self, url: str, topology: Topology, name: str, timeout: float, linger: float = 0.0) -> None:
        self._url = url
        self._linger = linger
        self._topology = topology
        self._name = name
        self._timeout = timeout
        self._connection: AbstractRobustConnection | None = None
        self._exchange: AbstractExchange | None = None
        self._connector: asyncio.Task[None] | None = None
        self._waiting = [_Waiting() for _ in range(topology.shards)]
        self._publishing: set[asyncio.Task[None]] = set()

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
        if self._exchange is None or not self.ready:
            raise BrokerUnavailable("not connected to the broker")
        loop = asyncio.get_running_loop()
        confirms = []
        for event in events:
            shard = self._topology.shard_of(event.tenant_id, event.channel_id, event.conversation_key)
            if isinstance(event, InboundEvent):
                key = event.event_id
            elif isinstance(event, StatusEvent):
                key = event.platform_message_id
            else:
                key = f"{event.action}:{event.issued_at}"
            confirm: asyncio.Future[None] = loop.create_future()
            confirms.append(confirm)
            waiting = self._waiting[shard]
            waiting.events.append(
                _Pending(envelope.encode(event), f"{event.channel_id}:{key}", event.conversation_key, confirm)
            )
            if not waiting.busy:
                waiting.busy = True
                task = loop.create_task(self._drain(shard, waiting))
                self._publishing.add(task)
                task.add_done_callback(self._publishing.discard)
        try:
            async with asyncio.timeout(self._timeout):
                results = await asyncio.gather(*confirms, return_exceptions=True)
        except TimeoutError as exc:
            raise BrokerUnavailable("publish failed: TimeoutError") from exc
        # broker gone, channel closed, nack or return: all mean 503
        if failed := [r for r in results if isinstance(r, BaseException)]:
            raise BrokerUnavailable(f"publish failed: {type(failed[0]).__name__}") from failed[0]

    async def _drain(self, shard: int, waiting: _Waiting) -> None:
        """Publish what waits for the shard, a message at a time, until nothing does."""
        try:
            if self._linger:  # the shard was idle: let the next few ms of events share the message
                await asyncio.sleep(self._linger)
            while waiting.events:
                batch = waiting.take()
                if not batch:
                    continue
                metrics.PUBLISH_BATCH.observe(len(batch))
                message = events_message([e.body for e in batch], batch[0].message_id, batch[0].conversation_key)
                try:
                    exchange = self._exchange
                    if exchange is None:
                        raise BrokerUnavailable("not connected to the broker")
                    async with asyncio.timeout(self._timeout):
                        await exchange.publish(message, routing_key=str(shard), mandatory=True)
                except Exception as exc:  # each waiting request answers 503
                    _answer(batch, exc)
                else:
                    _answer(batch, None)
        finally:
            waiting.busy = False

    async def close(self) -> None:
        for task in list(self._publishing):
            task.cancel()
        if self._connector is not None:
            self._connector.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._connector
        if self._connection is not None:
            await self._connection.close()
