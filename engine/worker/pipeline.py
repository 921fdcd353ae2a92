"""The worker's inbound pipeline: one delivery from a shard queue to rows staged in the open batch.

    on_delivery -> decode -> lane(conversation) -> dedupe -> brain.respond -> stage -> flusher.add

Per conversation, messages run strictly in arrival order (a lane each); across conversations they run
concurrently. Redeliveries are recognised here (the conversation's recent event ids) and at commit
time (the inbound_events ledger), and produce no second row or reply.
"""

from __future__ import annotations

import logging
import time

from engine import metrics
from engine.brain.catalog import Brain
from engine.bus import envelope
from engine.bus.consumer import Delivery, ShardConsumer
from engine.bus.lanes import Lanes
from engine.models import ConversationCommand, InboundEvent, Outcome, Reply, StatusEvent
from engine.recovery import hooks as recovery
from engine.store.pool import when_available
from engine.values import utc
from engine.worker import staging
from engine.worker.batch import Flusher
from engine.worker.conversations import ConversationCache, contact_id

log = logging.getLogger(__name__)


class Pipeline:
    def __init__(
        self, brain: Brain, cache: ConversationCache, consumer: ShardConsumer, flusher: Flusher, grace: float
    ) -> None:
        self.brain = brain
        self.grace = grace
        self.cache = cache
        self.consumer = consumer
        self.flusher = flusher
        self.lanes = Lanes()
        self.stop_words = recovery.StopWords(brain.pool)

    def on_delivery(self, delivery: Delivery) -> None:
        try:
            items = envelope.decode_events(delivery.message.body)
        except envelope.EnvelopeError as exc:
            reason = str(exc)
            tag = delivery.message.delivery_tag
            self.lanes.submit(("dead", tag), lambda: self.consumer.dead_letter(delivery, reason, "decode"))
            return
        # A message may carry several events (the receiver's batch for this shard): each goes to its
        # conversation's lane as a part of the message, which is acked once the last of them is done.
        for part, item in self.consumer.parts(delivery, items, envelope.encode):
            self._route(part, item)
        metrics.LANES.set(len(self.lanes))

    def _route(self, delivery: Delivery, item: envelope.Inbound) -> None:
        if isinstance(item, StatusEvent):
            key = _delivery_key(delivery)
            self.flusher.batch.rows.statuses.append((key, item))
            self.flusher.add(delivery, key=key)
        elif isinstance(item, ConversationCommand):
            self.lanes.submit((item.channel_id, item.conversation_key), lambda: self._command(delivery, item))
        else:
            self.lanes.submit((item.channel_id, item.conversation_key), lambda: self._handle(delivery, item))

    async def _command(self, delivery: Delivery, command: ConversationCommand) -> None:
        """Apply an operator's command in the conversation's lane, after the messages before it."""
        if command.action in recovery.ACTIONS:
            await self._recovery_command(delivery, command)
            return
        entry = await when_available(
            lambda: self.cache.get_existing(command.channel_id, command.conversation_key, delivery.shard)
        )
        if entry is None:
            log.warning("%s for an unknown conversation %s: ignored", command.action, command.conversation_key)
            self.flusher.add(delivery)
            return
        ledger = staging.command_key(command)  # an agent's reply: applied once, whatever the redeliveries
        if ledger is not None and entry.seen(ledger[1]):
            metrics.DUPLICATES.labels("cache").inc()
            self.flusher.add(delivery)
            return
        key = ledger or _delivery_key(delivery)
        staging.stage_command(self.flusher.batch.rows, key, command, entry.conversation, entry.contact, time.time())
        if ledger is not None:
            entry.remember(ledger[1])
        entry.pending += 1
        self.flusher.add(delivery, entry, key)

    async def _recovery_command(self, delivery: Delivery, command: ConversationCommand) -> None:
        """marketing_stop / marketing_resume (no conversation needed), or recovery_flow: park the
        conversation at the campaign's ask node so that the contact's reply answers it."""
        key = _delivery_key(delivery)
        if command.action != "recovery_flow":
            contact = contact_id(command.channel_id, command.conversation_key)
            recovery.stage_preference(self.flusher.batch.rows, key, command, contact)
            self.flusher.add(delivery, key=key)
            return
        entry = await when_available(
            lambda: self.cache.get_existing(command.channel_id, command.conversation_key, delivery.shard)
        )
        tenant = self.brain.tenants.get(command.tenant_id)
        if entry is None or not recovery.enter_flow(tenant, entry.conversation, command.data):
            log.warning("recovery reply flow for %s not entered", command.conversation_key)
            self.flusher.add(delivery)
            return
        self.flusher.batch.rows.stage_state(key, entry.conversation, entry.contact, utc(time.time()))
        entry.pending += 1
        self.flusher.add(delivery, entry, key)

    async def _handle(self, delivery: Delivery, event: InboundEvent) -> None:
        # While the database is away the lane waits here: the conversation's later messages queue
        # behind this one (handing it back would let them overtake it), and the prefetch bounds it.
        entry = await when_available(lambda: self.cache.get(event, delivery.shard))
        if entry.seen(event.event_id):
            metrics.DUPLICATES.labels("cache").inc()
            self.flusher.add(delivery)
            return
        if event.contact_name:
            entry.contact.name = event.contact_name
        entry.contact.attributes.update(event.contact_attributes)

        async def respond() -> Outcome:
            saved = entry.snapshot()
            try:
                return await self.brain.respond(event, entry.conversation, entry.contact)
            except BaseException:
                entry.restore(saved)  # undo what the failed attempt changed
                raise

        verdict = await when_available(lambda: self.stop_words.verdict(event))  # a STOP / START word
        try:  # a database outage (an old flow version, a tenant not loaded yet) is waited out here
            if verdict is not None and verdict[1]:
                outcome = Outcome(replies=[Reply(verdict[1])])  # the tenant's confirmation, not the bot
            else:
                outcome = await when_available(respond)
        except Exception as exc:  # a bug or a failing dependency in the brain: retry, then set aside
            log.exception("handling event %s failed", event.idempotency_key)
            await self.consumer.retry(delivery, repr(exc))
            return
        conversation, contact = entry.conversation, entry.contact
        for error in outcome.errors:
            log.warning("conversation %s: %s", conversation.id, error)
        batch = self.flusher.batch
        now = time.time()
        staging.stage_message(batch.rows, event, outcome, conversation, contact, now)
        recovery.stage_inbound(batch.rows, (event.channel_id, event.event_id), contact, verdict, now)
        conversation.is_new = False
        entry.remember(event.event_id)
        entry.pending += 1
        batch.messages += 1
        self.flusher.add(delivery, entry, (event.channel_id, event.event_id))

    async def release_shard(self, shard: int) -> None:
        """Before a shard moves away: flush and ack what we hold of it, then drop its state."""
        self.flusher.full.set()  # flush now rather than at the interval
        if not await self.consumer.wait_idle(shard, self.grace):
            log.warning("shard %d handed over with messages in flight; they go back to the broker", shard)
        self.cache.evict_shard(shard)


def _delivery_key(delivery: Delivery) -> tuple[str, str]:
    """A key for rows that belong to no inbound event (a receipt, a command): unique while batched."""
    return ("delivery", str(id(delivery)))
