"""What a handler gets: the caller (token), its validated input, and a database transaction scoped
to the caller's tenant under row-level security."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import asyncpg
from aiohttp import web
from pydantic import BaseModel

from engine.admin.api.routing import ApiError, not_found
from engine.crypto import CredentialError, Vault
from engine.settings import Settings
from engine.store import api_audit

API_ROLE = "engine_api"

SETTINGS = web.AppKey("api_settings", Settings)
POOL = web.AppKey("api_pool", asyncpg.Pool)
# Set the role and the tenant for this transaction only (is_local = true): a pooled connection
# never carries them into another request.
SET_TENANT = "SELECT set_config('role', $1, true), set_config('app.tenant_id', $2, true)"


@dataclass(frozen=True, slots=True)
class Principal:
    token_id: str
    tenant_id: str
    scopes: frozenset[str]
    prefix: str
    name: str

    @property
    def actor(self) -> str:
        return f"token:{self.prefix}" + (f" ({self.name})" if self.name else "")


@dataclass(slots=True)
class Call:
    request: web.Request
    principal: Principal
    params: dict[str, str]
    body: Any = None  # the validated model (or the raw JSON when the handler validates it)
    query: Any = None  # the validated query model

    @property
    def tenant_id(self) -> str:
        return self.principal.tenant_id

    @property
    def settings(self) -> Settings:
        return self.request.app[SETTINGS]

    def id(self, name: str = "id", what: str = "resource") -> str:
        """A path id; one that is not a uuid names nothing (404, as an id of another tenant)."""
        try:
            return str(uuid.UUID(self.params[name]))
        except ValueError:
            raise not_found(what) from None

    def model(self, cls: type[BaseModel]) -> Any:
        if not isinstance(self.body, cls):
            raise ApiError(500, "internal", "unexpected body")
        return self.body

    def vault(self) -> Vault:
        try:
            return Vault(self.settings.master_key)
        except CredentialError as exc:
            raise ApiError(503, "no_master_key", str(exc)) from None

    async def audit(
        self,
        conn: asyncpg.Connection,
        action: str,
        resource: str,
        resource_id: str | None,
        before: dict[str, Any] | None = None,
        after: dict[str, Any] | None = None,
    ) -> None:
        """Record a write (in the caller's transaction): ids and versions only, never a body."""
        p = self.principal
        await api_audit.record(conn, p.tenant_id, p.actor, p.token_id, action, resource, resource_id, before, after)

    async def audit_saved(self, conn: asyncpg.Connection, resource: str, saved_id: str, existing: str | None) -> None:
        """Record a create (POST, existing None) or an update (PUT of `existing`) of one item."""
        before = {"id": existing} if existing else None
        await self.audit(conn, "update" if existing else "create", resource, saved_id, before, {"id": saved_id})

    @contextlib.asynccontextmanager
    async def db(self) -> AsyncIterator[asyncpg.Connection]:
        async with tenant_transaction(self.request.app[POOL], self.tenant_id) as conn:
            yield conn


@contextlib.asynccontextmanager
async def tenant_transaction(pool: asyncpg.Pool, tenant_id: str | None) -> AsyncIterator[asyncpg.Connection]:
    """A transaction as the API role with app.tenant_id set: row-level security shows only that
    tenant's rows (none at all when tenant_id is None)."""
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute(SET_TENANT, API_ROLE, tenant_id or "")
        yield conn
