"""Checking API bodies with the tenant file's code: the same models, the same reference checks and
the same error paths `engine load` prints (a body is checked as the first item of its section, so
paths read `flows[0].nodes[ask].next`)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, TypeVar

import asyncpg
from pydantic import BaseModel, ValidationError

from engine.admin.api.routing import ApiError, not_found, problems, validation_problems
from engine.admin.sections import DefinitionError, Section, check_references, parse_section
from engine.store import api_config as sql
from engine.store import catalog

M = TypeVar("M", bound=BaseModel)
_ENV_REF = re.compile(r"^env:")


async def one_or_404(conn: asyncpg.Connection, query: str, *args: Any, what: str) -> asyncpg.Record:
    """The row the query finds, or 404 naming `what`."""
    row = await conn.fetchrow(query, *args)
    if row is None:
        raise not_found(what)
    return row


def check_identity(existing: str | None, new_id: str, found: asyncpg.Record | None, kind: str, key: str) -> None:
    """POST creates (409 if it exists); PUT changes the item its id names, whose key cannot change."""
    if existing is None and found is not None:
        raise ApiError(409, "exists", f"{kind[:-1]} exists: PUT /{kind}/{new_id} to change it")
    if existing is not None and found is None:
        raise not_found(kind[:-1])
    if existing is not None and new_id != existing:
        field = key.split()[-1]
        raise problems([f"{kind}[0].{field}: the {key} cannot change (it names the {kind[:-1]})"])


@dataclass(frozen=True, slots=True)
class TenantContext:
    bots: dict[str, str]  # slug -> id
    channels: dict[str, str]  # slug -> id
    tools: set[str]  # slugs
    flows: dict[tuple[str, str], set[str]]  # (bot id, slug) -> node ids


async def tenant_context(conn: asyncpg.Connection, tenant_id: str) -> TenantContext:
    bots = {r["slug"]: r["id"] for r in await conn.fetch(sql.SELECT_BOT_SLUGS, tenant_id)}
    channels = {r["slug"]: r["id"] for r in await conn.fetch(sql.SELECT_CHANNEL_SLUGS, tenant_id)}
    tools = {r["slug"] for r in await conn.fetch(catalog.SELECT_TOOLS, tenant_id)}
    flows = {
        (r["bot_id"], r["slug"]): {n["id"] for n in r["definition"].get("nodes", [])}
        for r in await conn.fetch(catalog.SELECT_LATEST_FLOWS, tenant_id)
    }
    return TenantContext(bots, channels, tools, flows)


def parse_item(model: type[M], kind: str, raw: dict[str, Any]) -> M:
    """A tenant-file item (bot, channel) checked by its model; errors as `kind[0].field`."""
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        raise validation_problems(exc, f"{kind}[0].") from None


async def check_section_item(
    conn: asyncpg.Connection, tenant_id: str, kind: str, raw: dict[str, Any]
) -> tuple[Section, TenantContext, list[str]]:
    """One rule, flow, tool, FAQ or document, checked as `engine load` checks a file holding only
    it, against what the tenant already has. Returns (parsed, context, warnings); raises a 422."""
    try:
        section = parse_section({kind: [raw]})
    except DefinitionError as exc:
        raise problems(exc.problems) from None
    ctx = await tenant_context(conn, tenant_id)
    errors, warnings = check_references(section, ctx.bots, ctx.channels, ctx.tools, ctx.flows)
    if kind == "documents":
        configs = {r["cfgname"] for r in await conn.fetch(catalog.SELECT_TEXT_SEARCH_CONFIGS)}
        errors += [f"documents[0].language: unknown text search configuration {d.language!r}"
                   for d in section.documents if d.language not in configs]  # fmt: skip
    if errors:
        raise problems(errors)
    return section, ctx, warnings


def refuse_env_references(kind: str, secrets: dict[str, str]) -> None:
    """`env:NAME` reads the environment of the process that saves: fine for an operator's tenant
    file, never for an API caller (it would hand them the server's own secrets)."""
    bad = [f"{kind}[0].secrets.{k}: env: references are for tenant files only" for k, v in secrets.items()
           if isinstance(v, str) and _ENV_REF.match(v)]  # fmt: skip
    if bad:
        raise problems(bad)
