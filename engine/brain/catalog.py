"""What the worker does with one inbound message: route it, run the flow, call the tools.

respond() mutates the conversation and contact in place and returns an Outcome (replies, tool runs,
errors); it never writes the conversation's state itself (the worker stages everything into its
batched flush) and awaits only its own tool calls, so it never blocks other conversations.

Definitions are loaded once at start() and compiled per tenant (engine.brain.compiled_tenant). A
LISTEN on 'engine_definitions' (NOTIFY triggers in sql/0002_brain.sql) rebuilds just the changed tenant,
a few tens of milliseconds later, and swaps it in whole; no query runs per message, except to fetch an
old flow version a conversation still runs (once, then cached) and the kb_search/memory tools.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

import aiohttp
import asyncpg

from engine.brain.compiled_tenant import TenantState, build_tenants, flow_from_row
from engine.brain.flows.interpreter import Flow
from engine.brain.turn import run_turn
from engine.crypto import CredentialError, Vault
from engine.models import Contact, Conversation, InboundEvent, Outcome
from engine.settings import Settings
from engine.store import catalog as sql
from engine.store.pool import TRANSIENT_ERRORS

log = logging.getLogger(__name__)
CHANNEL = "engine_definitions"
DEBOUNCE = 0.05  # seconds: one reload for a burst of notifications (an `engine load` of a tenant)
MISSING_TTL = 5.0  # seconds an unknown tenant is not looked up again


class Brain:
    def __init__(self, pool: asyncpg.Pool, http: aiohttp.ClientSession, settings: Settings) -> None:
        self.pool = pool
        self.http = http
        self.settings = settings
        self.tenants: dict[str, TenantState] = {}
        self._flows: dict[tuple[str, int], Flow] = {}  # every version seen; versions never change
        self._missing: dict[str, float] = {}
        self._dirty: set[str] = set()
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self.listening = asyncio.Event()  # set while the LISTEN connection is up
        self._lost = asyncio.Event()
        self._conn: asyncpg.Connection | None = None
        try:
            self._vault: Vault | None = Vault(settings.master_key) if settings.master_key else None
        except CredentialError:
            log.error("ENGINE_MASTER_KEY is unusable: tools with secrets are disabled")
            self._vault = None

    async def start(self) -> None:
        # LISTEN before loading: a change committed in between is then both loaded and notified,
        # never missed.
        self._conn = await self._connect_listener()
        await self.reload()
        self._tasks = [
            asyncio.create_task(self._relisten(), name="brain-listen"),
            asyncio.create_task(self._reloader(), name="brain-reload"),
        ]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        if self._conn is not None and not self._conn.is_closed():
            await self._conn.close()
        self._conn = None

    async def reload(self, tenant_id: str | None = None) -> None:
        """Rebuild one tenant (or all) from the database and swap the result in."""
        async with self.pool.acquire() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
            rows = await sql.fetch_all(conn, tenant_id)
        built = build_tenants(rows, self.pool, self.http, self._vault)
        for state in built.values():
            for flow in state.flows.values():
                self._flows[(flow.id, flow.version)] = flow
        if tenant_id is None:
            self.tenants = built
        elif tenant_id in built:
            self.tenants[tenant_id] = built[tenant_id]
        else:
            self.tenants.pop(tenant_id, None)
        log.info("definitions loaded", extra={"tenant_id": tenant_id, "tenants": len(built)})

    async def flow(self, flow_id: str, version: int) -> Flow | None:
        """A flow version: from memory, or fetched once (a conversation started before an edit)."""
        found = self._flows.get((flow_id, version))
        if found is None:
            row = await sql.fetch_flow_version(self.pool, flow_id, version)
            if row is not None:
                found = self._flows[(flow_id, version)] = flow_from_row(row)
        return found

    async def respond(self, event: InboundEvent, conversation: Conversation, contact: Contact) -> Outcome:
        state = self.tenants.get(event.tenant_id) or await self._load_unknown(event.tenant_id)
        return await run_turn(state, self.flow, self.settings.max_flow_steps, event, conversation, contact)

    async def _load_unknown(self, tenant_id: str) -> TenantState | None:
        """A tenant created after the last load whose notification has not arrived yet."""
        if self._missing.get(tenant_id, 0.0) > time.monotonic():
            return None
        await self.reload(tenant_id)
        if tenant_id not in self.tenants:
            self._missing[tenant_id] = time.monotonic() + MISSING_TTL
        return self.tenants.get(tenant_id)

    def _on_notify(self, _conn: object, _pid: int, _channel: str, payload: str) -> None:
        self._dirty.add(payload)
        self._missing.pop(payload, None)
        self._wake.set()

    async def _reloader(self) -> None:
        while True:
            await self._wake.wait()
            await asyncio.sleep(DEBOUNCE)
            self._wake.clear()
            dirty, self._dirty = self._dirty, set()
            for tenant_id in dirty:
                try:
                    await self.reload(tenant_id)
                except TRANSIENT_ERRORS as exc:
                    log.warning("reload failed (%s); retrying", type(exc).__name__, extra={"tenant_id": tenant_id})
                    self._dirty.add(tenant_id)
                    self._wake.set()
                    await asyncio.sleep(1.0)

    async def _connect_listener(self) -> asyncpg.Connection:
        conn = await asyncpg.connect(self.settings.database_url)
        self._lost.clear()
        conn.add_termination_listener(lambda _conn: self._lost.set())
        await conn.add_listener(CHANNEL, self._on_notify)
        self.listening.set()
        return conn

    async def _relisten(self) -> None:
        """After losing the LISTEN connection, reconnect and reload everything: notifications sent
        while it was down are lost."""
        while True:
            await self._lost.wait()
            self.listening.clear()
            log.warning("definitions listener lost; reconnecting")
            if self._conn is not None and not self._conn.is_closed():
                self._conn.terminate()
            await asyncio.sleep(1.0)
            try:
                self._conn = await self._connect_listener()
                await self.reload()
            except TRANSIENT_ERRORS as exc:
                log.warning("definitions listener: reconnect failed (%s); retrying", type(exc).__name__)
                self._lost.set()
