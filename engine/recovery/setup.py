"""Saving a tenant file's `recovery:`, `templates:` and `campaigns:` sections.

Everything is validated before anything is written; problems are reported as `path: message`, one a
line (`campaigns[0].steps[1].delay: expected a duration ...`). Saving is idempotent (rows change only
when they differ); a section present in the file replaces that kind for the tenant (campaigns left
out are archived, so their history stays), one absent leaves it alone.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import asyncpg
from pydantic import ValidationError

from engine.crypto import Vault
from engine.models import stable_id
from engine.recovery.campaigns import Campaign, RecoverySection, Template, check_references
from engine.store import recovery as sql
from engine.validation import loc_path, problem_lines

SECTIONS = ("recovery", "templates", "campaigns")


class RecoveryDefinitionError(ValueError):
    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


def _path(loc: tuple[Any, ...]) -> str:
    # pydantic names a union member it tried (a Literal or an enum) in the location: leave it out.
    return loc_path(tuple(p for p in loc if not (isinstance(p, str) and p.startswith(("literal[", "function-")))))


def parse(raw: dict[str, Any]) -> RecoverySection:
    try:
        return RecoverySection.model_validate({k: v for k, v in raw.items() if k in SECTIONS})
    except ValidationError as exc:
        raise RecoveryDefinitionError(problem_lines(exc, _path)) from None


def _with_bot_ids(campaign: Campaign, known_bots: dict[str, str]) -> Campaign:
    """reply_flow.bot saved as the bot's id, so the worker needs no slug lookup."""
    steps = [
        s.model_copy(
            update={
                "reply_flow": s.reply_flow.model_copy(
                    update={"bot": known_bots.get(s.reply_flow.bot, s.reply_flow.bot)}
                )
            }
        )
        if s.reply_flow
        else s
        for s in campaign.steps
    ]
    return campaign.model_copy(update={"steps": steps})


def campaign_id(tenant_id: str, slug: str) -> str:
    return str(stable_id(tenant_id, "recovery-campaign", slug))


async def _flows(
    conn: asyncpg.Connection, tenant_id: str, known_bots: dict[str, str], file_flows: list[dict[str, Any]] | None
) -> dict[tuple[str, str], dict[str, str]]:
    """{(bot id, flow slug): {node id: node type}}: the saved flows, and the file's own."""
    flows: dict[tuple[str, str], dict[str, str]] = {
        (r["bot_id"], r["slug"]): {n["id"]: n.get("type", "") for n in r["definition"].get("nodes", [])}
        for r in await conn.fetch(sql.SELECT_FLOW_NODES, tenant_id)
    }
    for f in file_flows or []:
        bot = known_bots.get(str(f.get("bot")), str(f.get("bot")))
        flows[(bot, str(f.get("slug")))] = {
            str(n.get("id")): str(n.get("type")) for n in f.get("nodes") or [] if isinstance(n, dict)
        }
    return flows


async def check_item(
    conn: asyncpg.Connection, tenant_id: str, kind: str, raw: Any, known_bots: dict[str, str]
) -> RecoverySection:
    """One campaign or template (kind "campaigns" / "templates"), checked as a tenant file holding
    only it is checked, against the tenant's saved flows and templates: problems name the same paths
    (`campaigns[0].steps[1].template`). Raises RecoveryDefinitionError."""
    section = parse({kind: [raw]})
    flows = await _flows(conn, tenant_id, known_bots, None)
    existing = {r["name"] for r in await conn.fetch(sql.SELECT_TEMPLATE_NAMES, tenant_id)}
    if problems := check_references(section, known_bots, flows, existing):
        raise RecoveryDefinitionError(problems)
    return section


def template_id(tenant_id: str, name: str, language: str) -> str:
    return str(stable_id(tenant_id, "template", name, language))


async def upsert_template(conn: asyncpg.Connection, tenant_id: str, t: Template) -> str:
    """Save one validated template (a no-op when unchanged); returns its id."""
    tid = template_id(tenant_id, t.name, t.language)
    components = [c.model_dump(mode="json", exclude_none=True) for c in t.components]
    await conn.execute(sql.UPSERT_TEMPLATE, tid, tenant_id, t.name, t.language, t.category.value, components, t.text,
                       t.status.value, t.platform_id)  # fmt: skip
    return tid


async def upsert_campaign(conn: asyncpg.Connection, tenant_id: str, c: Campaign, known_bots: dict[str, str]) -> str:
    """Save one validated campaign (a no-op when unchanged); returns its id. The scheduler and the
    events endpoint read campaigns from the table at each event and claim, so this is all it takes."""
    c = _with_bot_ids(c, known_bots)
    cid = campaign_id(tenant_id, c.slug)
    await conn.execute(
        sql.UPSERT_CAMPAIGN, cid, tenant_id, c.slug, c.name or c.slug, c.type.value, c.category.value,
        c.status.value, [t.value for t in c.triggers], c.definition(),
    )  # fmt: skip
    return cid


async def save_recovery(
    conn: asyncpg.Connection,
    tenant_id: str,
    raw: dict[str, Any],
    known_bots: dict[str, str],
    vault: Vault,
    resolve_secret: Callable[[str, str], str],
    file_flows: list[dict[str, Any]] | None = None,
) -> None:
    """Validate and save the sections present in raw. resolve_secret(path, value): the tenant
    file's `env:NAME` rule for secrets (it raises with the path when a name is not allowed).
    file_flows: the file's own `flows:` (those a reply_flow may name, besides the saved ones)."""
    section = parse(raw)
    flows = await _flows(conn, tenant_id, known_bots, file_flows)
    existing = (
        set() if "templates" in raw else {r["name"] for r in await conn.fetch(sql.SELECT_TEMPLATE_NAMES, tenant_id)}
    )
    if problems := check_references(section, known_bots, flows, existing):
        raise RecoveryDefinitionError(problems)
    async with conn.transaction():
        if "recovery" in raw and section.recovery is not None:
            s = section.recovery
            given = {
                "signing_key": s.signing_key and resolve_secret("recovery.signing_key", s.signing_key),
                "shopify_secret": s.shopify_secret and resolve_secret("recovery.shopify_secret", s.shopify_secret),
            }
            secrets = {k: v for k, v in given.items() if v}
            old = await conn.fetchval(sql.SELECT_SETTINGS_SECRETS, tenant_id)
            token = vault.encrypt_unless_same(old, secrets) if secrets else None
            stop, resume = s.words()
            await conn.execute(sql.UPSERT_SETTINGS, tenant_id, token, stop, resume, s.opt_out_reply)
        if "templates" in raw:
            ids = [await upsert_template(conn, tenant_id, t) for t in section.templates]
            await conn.execute(sql.DELETE_TEMPLATES_EXCEPT, tenant_id, ids)
        if "campaigns" in raw:
            ids = [await upsert_campaign(conn, tenant_id, c, known_bots) for c in section.campaigns]
            await conn.execute(sql.ARCHIVE_CAMPAIGNS_EXCEPT, tenant_id, ids)
