"""Recovery campaigns and templates, one at a time, checked by the tenant file's code (the same models
and reference checks, the same error paths: `campaigns[0].steps[1].template`), and a campaign's
analytics. Campaigns and templates are read from their tables by the events endpoint and by the
scheduler at each claim, so a write here reaches them as a tenant-file change does: at the next event
or claim."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any

import asyncpg

from engine.admin.api.checks import check_identity, one_or_404
from engine.admin.api.context import Call
from engine.admin.api.models import AnalyticsDayOut, AnalyticsOut, AnalyticsQuery, CampaignOut, FunnelOut, TemplateOut
from engine.admin.api.routing import ApiError, Reply, Route, not_found, problems
from engine.recovery import setup
from engine.recovery.campaigns import Campaign, RecoverySection, Template
from engine.recovery.report import FUNNEL
from engine.store import api_config
from engine.store import api_recovery as sql
from engine.store import recovery as rsql

READ, WRITE = ("read", "write"), ("write",)
DEFAULT_SINCE_DAYS = 30


async def _checked(conn: asyncpg.Connection, call: Call, kind: str) -> tuple[RecoverySection, dict[str, str]]:
    """The body as the only item of the `kind` section, checked; (section, the tenant's bots by slug)."""
    bots = {r["slug"]: r["id"] for r in await conn.fetch(api_config.SELECT_BOT_SLUGS, call.tenant_id)}
    try:
        section = await setup.check_item(conn, call.tenant_id, kind, call.body, bots)
    except setup.RecoveryDefinitionError as exc:
        raise problems(exc.problems) from None
    return section, bots


# --- campaigns ------------------------------------------------------------------------------------------


async def list_campaigns(call: Call) -> Reply:
    async with call.db() as conn:
        return Reply([CampaignOut(**dict(r)) for r in await conn.fetch(sql.SELECT_CAMPAIGNS, call.tenant_id)])


async def get_campaign(call: Call) -> Reply:
    async with call.db() as conn:
        row = await one_or_404(conn, sql.SELECT_CAMPAIGN, call.tenant_id, call.id(what="campaign"), what="campaign")
    return Reply(CampaignOut(**dict(row)))


async def _save_campaign(call: Call, existing: str | None) -> Reply:
    async with call.db() as conn:
        if existing:  # an id of nothing (or of another tenant) is 404 whatever the body
            await one_or_404(conn, sql.SELECT_CAMPAIGN, call.tenant_id, existing, what="campaign")
        section, bots = await _checked(conn, call, "campaigns")
        campaign = section.campaigns[0]
        cid = setup.campaign_id(call.tenant_id, campaign.slug)
        found = await conn.fetchrow(sql.SELECT_CAMPAIGN, call.tenant_id, existing or cid)
        check_identity(existing, cid, found, "campaigns", "slug")
        await setup.upsert_campaign(conn, call.tenant_id, campaign, bots)
        await call.audit_saved(conn, "campaigns", cid, existing)
        row = await conn.fetchrow(sql.SELECT_CAMPAIGN, call.tenant_id, cid)
    return Reply(CampaignOut(**dict(row)), 200 if existing else 201)


async def create_campaign(call: Call) -> Reply:
    return await _save_campaign(call, None)


async def update_campaign(call: Call) -> Reply:
    return await _save_campaign(call, call.id(what="campaign"))


async def archive_campaign(call: Call) -> Reply:
    cid = call.id(what="campaign")
    async with call.db() as conn:
        if await conn.fetchval(sql.ARCHIVE_CAMPAIGN, call.tenant_id, cid) is None:
            raise not_found("campaign")
        await call.audit(conn, "archive", "campaigns", cid, {"id": cid}, {"id": cid, "status": "archived"})
    return Reply(None, 204)


def _funnel(row: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {k: int(row.get(k) or 0) for k in FUNNEL}
    out["skipped"] = {k: int(v) for k, v in (row.get("skipped") or {}).items()}
    out["revenue_at_risk"] = float(row.get("revenue_at_risk") or 0.0)
    out["revenue_recovered"] = float(row.get("revenue_recovered") or 0.0)
    out["conversion_rate"] = round(out["converted"] / out["events"], 4) if out["events"] else 0.0
    return out


async def campaign_analytics(call: Call) -> Reply:
    """The campaign's funnel per day of its events since `since`, and its totals; refreshed first from
    the events and messages, as `engine recovery report` does."""
    q: AnalyticsQuery = call.query
    since: date = q.since or (datetime.now(UTC) - timedelta(days=DEFAULT_SINCE_DAYS)).date()
    async with call.db() as conn:
        cid = call.id(what="campaign")
        campaign = await one_or_404(conn, sql.SELECT_CAMPAIGN, call.tenant_id, cid, what="campaign")
        start = datetime(since.year, since.month, since.day, tzinfo=UTC)
        await conn.execute(rsql.REFRESH_ANALYTICS, call.tenant_id, start)
        days = await conn.fetch(sql.SELECT_ANALYTICS, call.tenant_id, campaign["id"], since)
        totals = await conn.fetchrow(rsql.SELECT_FUNNEL, call.tenant_id, since, campaign["slug"])
    return Reply(AnalyticsOut(
        campaign_id=campaign["id"], slug=campaign["slug"], since=since,
        totals=FunnelOut(**_funnel(dict(totals) if totals else {})),
        days=[AnalyticsDayOut(**dict(d)) for d in days],
    ))  # fmt: skip


# --- templates ------------------------------------------------------------------------------------------


async def list_templates(call: Call) -> Reply:
    async with call.db() as conn:
        return Reply([TemplateOut(**dict(r)) for r in await conn.fetch(sql.SELECT_TEMPLATES, call.tenant_id)])


async def get_template(call: Call) -> Reply:
    async with call.db() as conn:
        row = await one_or_404(conn, sql.SELECT_TEMPLATE, call.tenant_id, call.id(what="template"), what="template")
    return Reply(TemplateOut(**dict(row)))


async def _save_template(call: Call, existing: str | None) -> Reply:
    async with call.db() as conn:
        if existing:
            await one_or_404(conn, sql.SELECT_TEMPLATE, call.tenant_id, existing, what="template")
        section, _ = await _checked(conn, call, "templates")
        template = section.templates[0]
        tid = setup.template_id(call.tenant_id, template.name, template.language)
        found = await conn.fetchrow(sql.SELECT_TEMPLATE, call.tenant_id, existing or tid)
        check_identity(existing, tid, found, "templates", "name and language")
        await setup.upsert_template(conn, call.tenant_id, template)
        await call.audit_saved(conn, "templates", tid, existing)
        row = await conn.fetchrow(sql.SELECT_TEMPLATE, call.tenant_id, tid)
    return Reply(TemplateOut(**dict(row)), 200 if existing else 201)


async def create_template(call: Call) -> Reply:
    return await _save_template(call, None)


async def update_template(call: Call) -> Reply:
    return await _save_template(call, call.id(what="template"))


async def delete_template(call: Call) -> Reply:
    tid = call.id(what="template")
    async with call.db() as conn:
        row = await one_or_404(conn, sql.SELECT_TEMPLATE, call.tenant_id, tid, what="template")
        users = [r["slug"] for r in await conn.fetch(sql.SELECT_TEMPLATE_USERS, call.tenant_id, row["name"], tid)]
        if users:
            raise ApiError(409, "in_use", f"template {row['name']!r} is used by the campaigns {users}")
        await conn.execute(sql.DELETE_TEMPLATE, call.tenant_id, tid)
        await call.audit(conn, "delete", "templates", tid, {"id": tid}, None)
    return Reply(None, 204)


ROUTES = [
    Route("GET", "/campaigns", list_campaigns, "List recovery campaigns", "campaigns", READ,
          response=list[CampaignOut]),
    Route("POST", "/campaigns", create_campaign, "Create a recovery campaign", "campaigns", WRITE, body=Campaign,
          response=CampaignOut, status=201, errors=(409,), validated_by_handler=True),
    Route("GET", "/campaigns/{id}", get_campaign, "Get a recovery campaign", "campaigns", READ,
          response=CampaignOut, errors=(404,)),
    Route("PUT", "/campaigns/{id}", update_campaign, "Replace a recovery campaign (same slug)", "campaigns", WRITE,
          body=Campaign, response=CampaignOut, errors=(404,), validated_by_handler=True),
    Route("DELETE", "/campaigns/{id}", archive_campaign, "Archive a campaign (its messages and funnel stay)",
          "campaigns", WRITE, status=204, errors=(404,)),
    Route("GET", "/campaigns/{id}/analytics", campaign_analytics, "A campaign's funnel per day and its totals",
          "campaigns", READ, query=AnalyticsQuery, response=AnalyticsOut, errors=(404,)),
    Route("GET", "/templates", list_templates, "List message templates", "templates", READ,
          response=list[TemplateOut]),
    Route("POST", "/templates", create_template, "Create a message template", "templates", WRITE, body=Template,
          response=TemplateOut, status=201, errors=(409,), validated_by_handler=True),
    Route("GET", "/templates/{id}", get_template, "Get a message template", "templates", READ,
          response=TemplateOut, errors=(404,)),
    Route("PUT", "/templates/{id}", update_template, "Replace a message template (same name and language)",
          "templates", WRITE, body=Template, response=TemplateOut, errors=(404,), validated_by_handler=True),
    Route("DELETE", "/templates/{id}", delete_template, "Delete a template no active campaign needs", "templates",
          WRITE, status=204, errors=(404, 409)),
]  # fmt: skip
