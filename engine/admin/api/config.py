"""The tenant, its bots and its channels (channel secrets are write-only; the webhook URL is
returned). Writes reach the workers through the tables' NOTIFY triggers, as `engine load` does."""

from __future__ import annotations

from typing import Any

import asyncpg

from engine.admin import tenant_file
from engine.admin.api.checks import parse_item, refuse_env_references
from engine.admin.api.context import Call
from engine.admin.api.models import BotOut, ChannelOut, TenantOut, TenantPatch
from engine.admin.api.routing import ApiError, Reply, Route, not_found, problems
from engine.crypto import CredentialError, Vault
from engine.store import api_config as sql
from engine.store import tenants

READ, WRITE = ("read", "write"), ("write",)


async def get_tenant(call: Call) -> Reply:
    async with call.db() as conn:
        row = await conn.fetchrow(sql.SELECT_TENANT, call.tenant_id)
    if row is None:
        raise not_found("tenant")
    return Reply(TenantOut(**dict(row)))


async def patch_tenant(call: Call) -> Reply:
    patch: TenantPatch = call.model(TenantPatch)
    async with call.db() as conn:
        row = await conn.fetchrow(sql.SELECT_TENANT, call.tenant_id)
        if row is None:
            raise not_found("tenant")
        row = await conn.fetchrow(
            sql.UPDATE_TENANT, call.tenant_id, patch.name or row["name"], patch.timezone or row["timezone"]
        )
        await call.audit(conn, "update", "tenant", call.tenant_id)
    return Reply(TenantOut(**dict(row)))


# --- bots ---------------------------------------------------------------------------------------------


async def list_bots(call: Call) -> Reply:
    async with call.db() as conn:
        rows = await conn.fetch(sql.SELECT_BOTS, call.tenant_id)
    return Reply([BotOut(**dict(r)) for r in rows])


async def get_bot(call: Call) -> Reply:
    async with call.db() as conn:
        row = await conn.fetchrow(sql.SELECT_BOT, call.tenant_id, call.id(what="bot"))
    if row is None:
        raise not_found("bot")
    return Reply(BotOut(**dict(row)))


async def _save_bot(call: Call, existing: str | None) -> Reply:
    if existing:  # an id of nothing (or of another tenant) is 404 whatever the body
        async with call.db() as conn:
            if await conn.fetchrow(sql.SELECT_BOT, call.tenant_id, existing) is None:
                raise not_found("bot")
    spec = parse_item(tenant_file.BotSpec, "bots", call.body)
    bid = tenant_file.bot_id(call.tenant_id, spec.slug)
    async with call.db() as conn:
        found = await conn.fetchrow(sql.SELECT_BOT, call.tenant_id, existing or bid)
        if existing is None and found is not None:
            raise ApiError(409, "exists", f"bot {spec.slug!r} exists: PUT /bots/{bid} to change it")
        if existing is not None:
            if found is None:
                raise not_found("bot")
            if bid != existing:
                raise problems([f"bots[0].slug: the slug names the bot and cannot change (it is {found['slug']!r})"])
        await tenants.upsert_bot(conn, bid, call.tenant_id, spec.slug, spec.name, spec.welcome_text, spec.echo,
                                 spec.settings)  # fmt: skip
        await call.audit_saved(conn, "bots", bid, existing)
        row = await conn.fetchrow(sql.SELECT_BOT, call.tenant_id, bid)
    return Reply(BotOut(**dict(row)), 200 if existing else 201)


async def create_bot(call: Call) -> Reply:
    return await _save_bot(call, None)


async def update_bot(call: Call) -> Reply:
    return await _save_bot(call, call.id(what="bot"))


async def delete_bot(call: Call) -> Reply:
    bid = call.id(what="bot")
    async with call.db() as conn:
        if await conn.fetchval(sql.DELETE_BOT, call.tenant_id, bid) is None:
            raise not_found("bot")
        await call.audit(conn, "delete", "bots", bid, {"id": bid}, None)
    return Reply(None, 204)


# --- channels -----------------------------------------------------------------------------------------


def _channel_out(call: Call, row: asyncpg.Record, vault: Vault | None) -> ChannelOut:
    names: list[str] = []
    if row["credentials"] and vault is not None:
        try:
            names = sorted(vault.decrypt(row["credentials"]))
        except CredentialError:
            names = []
    data: dict[str, Any] = {k: row[k] for k in row.keys() if k != "credentials"}  # noqa: SIM118
    url = f"{call.request.url.origin()}/webhooks/{row['type']}/{row['id']}"
    return ChannelOut(**data, secret_names=names, webhook_url=url)


def _maybe_vault(call: Call) -> Vault | None:
    try:
        return call.vault()
    except ApiError:
        return None


async def list_channels(call: Call) -> Reply:
    async with call.db() as conn:
        rows = await conn.fetch(sql.SELECT_CHANNELS, call.tenant_id)
    vault = _maybe_vault(call)
    return Reply([_channel_out(call, r, vault) for r in rows])


async def get_channel(call: Call) -> Reply:
    async with call.db() as conn:
        row = await conn.fetchrow(sql.SELECT_CHANNEL, call.tenant_id, call.id(what="channel"))
    if row is None:
        raise not_found("channel")
    return Reply(_channel_out(call, row, _maybe_vault(call)))


async def _save_channel(call: Call, existing: str | None) -> Reply:
    if existing:
        async with call.db() as conn:
            if await conn.fetchrow(sql.SELECT_CHANNEL, call.tenant_id, existing) is None:
                raise not_found("channel")
    spec = parse_item(tenant_file.ChannelSpec, "channels", call.body)
    refuse_env_references("channels", spec.secrets)
    cid = tenant_file.channel_id(call.tenant_id, spec.slug)
    vault = call.vault()
    async with call.db() as conn:
        found = await conn.fetchrow(sql.SELECT_CHANNEL, call.tenant_id, existing or cid)
        if existing is None and found is not None:
            raise ApiError(409, "exists", f"channel {spec.slug!r} exists: PUT /channels/{cid} to change it")
        if existing is not None:
            if found is None:
                raise not_found("channel")
            if cid != existing:
                raise problems([f"channels[0].slug: the slug names the channel and cannot change ({found['slug']!r})"])
        bots = {r["slug"]: r["id"] for r in await conn.fetch(sql.SELECT_BOT_SLUGS, call.tenant_id)}
        if spec.bot is not None and spec.bot not in bots:
            raise problems([f"channels[0].bot: unknown bot {spec.bot!r} (bots: {sorted(bots)})"])
        # Secrets are write-only: the ones given replace those of the same name, the others stay.
        old = found["credentials"] if found else None
        secrets = {**(vault.decrypt(old) if old else {}), **spec.secrets}
        await tenants.upsert_channel(
            conn, cid, call.tenant_id, bots[spec.bot] if spec.bot else None, spec.slug, spec.type.value,
            spec.external_id, vault.encrypt_unless_same(old, secrets), spec.config, spec.active,
        )  # fmt: skip
        await call.audit_saved(conn, "channels", cid, existing)
        row = await conn.fetchrow(sql.SELECT_CHANNEL, call.tenant_id, cid)
    return Reply(_channel_out(call, row, vault), 200 if existing else 201)


async def create_channel(call: Call) -> Reply:
    return await _save_channel(call, None)


async def update_channel(call: Call) -> Reply:
    return await _save_channel(call, call.id(what="channel"))


async def delete_channel(call: Call) -> Reply:
    cid = call.id(what="channel")
    async with call.db() as conn:
        if await conn.fetchval(sql.DELETE_CHANNEL, call.tenant_id, cid) is None:
            raise not_found("channel")
        await call.audit(conn, "delete", "channels", cid, {"id": cid}, None)
    return Reply(None, 204)


ROUTES = [
    Route("GET", "/tenant", get_tenant, "The token's tenant", "tenant", READ, response=TenantOut),
    Route("PATCH", "/tenant", patch_tenant, "Rename the tenant or change its time zone", "tenant", WRITE,
          body=TenantPatch, response=TenantOut),
    Route("GET", "/bots", list_bots, "List bots", "bots", READ, response=list[BotOut]),
    Route("POST", "/bots", create_bot, "Create a bot", "bots", WRITE, body=tenant_file.BotSpec, response=BotOut,
          status=201, errors=(409,), validated_by_handler=True),
    Route("GET", "/bots/{id}", get_bot, "Get a bot", "bots", READ, response=BotOut, errors=(404,)),
    Route("PUT", "/bots/{id}", update_bot, "Replace a bot's settings (same slug)", "bots", WRITE,
          body=tenant_file.BotSpec, response=BotOut, errors=(404,), validated_by_handler=True),
    Route("DELETE", "/bots/{id}", delete_bot, "Delete a bot and its flows, FAQs and documents", "bots", WRITE,
          status=204, errors=(404,)),
    Route("GET", "/channels", list_channels, "List channels (secret names only) with their webhook URLs", "channels",
          READ, response=list[ChannelOut]),
    Route("POST", "/channels", create_channel, "Create a channel; secrets are write-only", "channels", WRITE,
          body=tenant_file.ChannelSpec, response=ChannelOut, status=201, errors=(409,), validated_by_handler=True),
    Route("GET", "/channels/{id}", get_channel, "Get a channel", "channels", READ, response=ChannelOut, errors=(404,)),
    Route("PUT", "/channels/{id}", update_channel, "Replace a channel (secrets given replace those of the same name)",
          "channels", WRITE, body=tenant_file.ChannelSpec, response=ChannelOut, errors=(404,),
          validated_by_handler=True),
    Route("DELETE", "/channels/{id}", delete_channel, "Delete a channel and its conversations", "channels", WRITE,
          status=204, errors=(404,)),
]  # fmt: skip
