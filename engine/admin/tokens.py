"""API tokens: `engine token create|list|revoke`, and the hashing the API checks them with.

A token is shown once, when it is created: a recognisable prefix (`eng_`) and 32 random bytes,
base64url. Only its SHA-256 is stored, with a display prefix (the first 12 characters), its scopes,
tenant, creator, expiry, last use and revocation.
"""

from __future__ import annotations

import base64
import getpass
import hashlib
import secrets
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import asyncpg

from engine.store import api_tokens as sql

TOKEN_PREFIX = "eng_"
DISPLAY_CHARS = 12
SCOPES = ("read", "write", "agent")


class TokenError(ValueError):
    """A bad argument to a token command (unknown tenant, scope or duration)."""


@dataclass(frozen=True, slots=True)
class NewToken:
    id: str
    token: str  # shown once, never stored
    prefix: str
    tenant_id: str
    scopes: tuple[str, ...]
    expires_at: datetime | None


def digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def generate() -> str:
    return TOKEN_PREFIX + base64.urlsafe_b64encode(secrets.token_bytes(32)).decode().rstrip("=")


def parse_scopes(text: str) -> tuple[str, ...]:
    scopes = tuple(dict.fromkeys(s.strip() for s in text.split(",") if s.strip()))
    if not scopes or set(scopes) - set(SCOPES):
        raise TokenError(f"scopes must be some of {', '.join(SCOPES)} (got {text!r})")
    return scopes


def parse_expiry(text: str | None, now: datetime | None = None) -> datetime | None:
    """`30d`, `12h`, `90m` from now, or an ISO date/time; None for a token that does not expire."""
    if not text:
        return None
    now = now or datetime.now(UTC)
    units = {"d": "days", "h": "hours", "m": "minutes"}
    if text[-1] in units and text[:-1].isdigit():
        return now + timedelta(**{units[text[-1]]: int(text[:-1])})
    try:
        at = datetime.fromisoformat(text)
    except ValueError:
        raise TokenError(f"--expires: {text!r} is neither a duration (30d, 12h, 90m) nor an ISO date") from None
    return at if at.tzinfo else at.replace(tzinfo=UTC)


async def create(
    conn: asyncpg.Connection,
    tenant_slug: str,
    scopes: tuple[str, ...],
    *,
    name: str = "",
    expires_at: datetime | None = None,
    created_by: str | None = None,
) -> NewToken:
    tenant = await sql.tenant_id(conn, tenant_slug)
    if tenant is None:
        raise TokenError(f"no tenant {tenant_slug!r}")
    token = generate()
    token_id = str(uuid.uuid4())
    prefix = token[:DISPLAY_CHARS]
    creator = created_by or f"cli:{getpass.getuser()}"
    await sql.insert(conn, token_id, tenant, name, prefix, digest(token), list(scopes), creator, expires_at)
    return NewToken(token_id, token, prefix, tenant, scopes, expires_at)


async def list_tokens(conn: asyncpg.Connection, tenant_slug: str | None) -> list[asyncpg.Record]:
    tenant = None
    if tenant_slug is not None and (tenant := await sql.tenant_id(conn, tenant_slug)) is None:
        raise TokenError(f"no tenant {tenant_slug!r}")
    return await sql.list_tokens(conn, tenant)


async def revoke(conn: asyncpg.Connection, id_or_prefix: str) -> list[asyncpg.Record]:
    """Revoke the token with this id or display prefix; returns what was revoked (none if unknown
    or already revoked). Takes effect on the API's next request."""
    if len(id_or_prefix) < DISPLAY_CHARS:
        raise TokenError(f"give a token id or its whole {DISPLAY_CHARS}-character prefix")
    return await sql.revoke(conn, id_or_prefix)
