"""A tenant's brain as code: rules, flows, tools, FAQs and documents, validated then saved.

`engine load` hands its file's sections to save_definitions(). Validation rejects the whole section
with every problem listed as `path: message` (`rules[3].conditions.all[1].regex: invalid regex ...`,
`flows[0].nodes[ask_order].next: no node 'x'`). Saving is idempotent: rows are upserted only when
they differ, a flow gets a new version only when its definition changed (older versions stay for
the conversations running them), and a section present in the file replaces what the tenant had.
"""

from __future__ import annotations

import logging
import re
from typing import Any

import asyncpg
from pydantic import Field, ValidationError

from engine.admin.environment import NOTHING, NotAllowed, TenantEnvironment
from engine.brain.flows.flow_models import FlowDef
from engine.brain.flows.validate import check_flow
from engine.brain.routing.rule_models import Rule
from engine.brain.tools.tool_models import HttpToolDef
from engine.crypto import Vault
from engine.models import stable_id
from engine.store import catalog as sql
from engine.validation import Strict, problem_lines

log = logging.getLogger(__name__)
SECTIONS = ("rules", "flows", "tools", "faqs", "documents")


class DefinitionError(ValueError):
    """Invalid definitions; str() lists each problem as `path: message`, one a line."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


class FaqDef(Strict):
    bot: str
    question: str = Field(min_length=1)
    answer: str = Field(min_length=1)
    keywords: list[str] = []


class DocumentDef(Strict):
    bot: str
    slug: str = Field(pattern=r"^[a-z0-9][a-z0-9_\-]{0,120}$")
    title: str = Field(min_length=1)
    body: str = Field(min_length=1)
    url: str | None = None
    language: str = "english"  # a PostgreSQL text search configuration


class Section(Strict):
    rules: list[Rule] = []
    flows: list[FlowDef] = []
    tools: list[HttpToolDef] = []
    faqs: list[FaqDef] = []
    documents: list[DocumentDef] = []


def flow_id(tenant_id: str, bot_id: str, slug: str) -> str:
    return str(stable_id(tenant_id, "flow", bot_id, slug))


def _path(loc: tuple[Any, ...], raw: dict[str, Any]) -> str:
    """pydantic's loc as `flows[0].nodes[ask_order].prompt`: node ids instead of node indexes, and
    without the discriminator tag pydantic inserts for a node's type."""
    out, node = "", raw
    items = list(loc)
    i = 0
    while i < len(items):
        part = items[i]
        at_node = isinstance(part, int) and out.endswith(".nodes") and isinstance(node, list)
        if at_node and part < len(node) and isinstance(node[part], dict) and node[part].get("id"):
            out += f"[{node[part]['id']}]"
            if i + 1 < len(items) and items[i + 1] == node[part].get("type"):
                i += 1  # the discriminator tag
        else:
            out += f"[{part}]" if isinstance(part, int) else f".{part}"
        node = node[part] if isinstance(node, dict | list) and _has(node, part) else None  # type: ignore[assignment]
        i += 1
    return out.lstrip(".")


def _has(container: dict[str, Any] | list[Any], key: Any) -> bool:
    if isinstance(container, list):
        return isinstance(key, int) and 0 <= key < len(container)
    return key in container


def parse_section(raw: dict[str, Any]) -> Section:
    try:
        return Section.model_validate({k: v for k, v in raw.items() if k in SECTIONS})
    except ValidationError as exc:
        raise DefinitionError(problem_lines(exc, lambda loc: _path(loc, raw))) from None


def check_references(
    section: Section,
    known_bots: dict[str, str],
    known_channels: dict[str, str] | None,
    existing_tools: set[str],
    existing_flows: dict[tuple[str, str], set[str]],
) -> tuple[list[str], list[str]]:
    """(errors, warnings) across sections. known_bots: {slug: id}; existing_*: what the tenant
    already has, for references to a section this file does not carry."""
    bot_ids = {**known_bots, **{v: v for v in known_bots.values()}}
    errors: list[str] = []
    warnings: list[str] = []
    flows = dict(existing_flows)
    flows.update({(bot_ids.get(f.bot, f.bot), f.slug): {n.id for n in f.nodes} for f in section.flows})
    tools = {t.slug for t in section.tools} or existing_tools
    errors += _duplicates("rules", [r.name for r in section.rules], "name")
    errors += _duplicates("tools", [t.slug for t in section.tools], "slug")
    errors += _duplicates("flows", [f"{f.bot}/{f.slug}" for f in section.flows], "bot/slug")
    errors += _duplicates("documents", [f"{d.bot}/{d.slug}" for d in section.documents], "bot/slug")
    for i, rule in enumerate(section.rules):
        for j, action in enumerate(rule.actions):
            if (s := action.start_flow) is None:
                continue
            at = f"rules[{i}].actions[{j}].start_flow"
            if s.bot not in bot_ids:
                errors.append(f"{at}.bot: unknown bot {s.bot!r} (bots: {sorted(known_bots)})")
            elif (bot_ids[s.bot], s.flow) not in flows:
                errors.append(f"{at}.flow: bot {s.bot!r} has no flow {s.flow!r}")
            elif s.node is not None and s.node not in flows[(bot_ids[s.bot], s.flow)]:
                errors.append(f"{at}.node: flow {s.flow!r} has no node {s.node!r}")
        if known_channels is not None and rule.conditions is not None:
            errors += [f"rules[{i}].conditions{p}" for p in _channel_refs(rule.conditions, known_channels)]
    defaults: set[str] = set()
    for i, flow in enumerate(section.flows):
        if flow.bot not in bot_ids:
            errors.append(f"flows[{i}].bot: unknown bot {flow.bot!r} (bots: {sorted(known_bots)})")
            continue
        if flow.default and flow.bot in defaults:
            errors.append(f"flows[{i}].default: bot {flow.bot!r} already has a default flow")
        if flow.default:
            defaults.add(flow.bot)
        siblings = {slug: nodes for (bot, slug), nodes in flows.items() if bot == bot_ids[flow.bot]}
        errs, warns = check_flow(flow, f"flows[{i}]", tools=tools, sibling_flows=siblings)
        errors += errs
        warnings += warns
    refs = [("faqs", i, x.bot) for i, x in enumerate(section.faqs)]
    refs += [("documents", i, x.bot) for i, x in enumerate(section.documents)]
    errors += [f"{kind}[{i}].bot: unknown bot {bot!r}" for kind, i, bot in refs if bot not in bot_ids]
    return errors, warnings


def _duplicates(kind: str, keys: list[str], what: str) -> list[str]:
    seen: set[str] = set()
    found = []
    for i, key in enumerate(keys):
        if key in seen:
            found.append(f"{kind}[{i}].{what.split('/')[-1]}: duplicate {what} {key!r}")
        seen.add(key)
    return found


def _channel_refs(cond: Any, channels: dict[str, str]) -> list[str]:
    ids = set(channels.values())
    found = []
    if cond.channel is not None:
        found += [f".channel: unknown channel {c!r}" for c in cond.channel if c not in channels and c not in ids]
    for key in ("all", "any"):
        for i, sub in enumerate(getattr(cond, key) or []):
            found += [f".{key}[{i}]{p}" for p in _channel_refs(sub, channels)]
    if cond.not_ is not None:
        found += [f".not{p}" for p in _channel_refs(cond.not_, channels)]
    return found


def resolve_secret(path: str, value: str, env: TenantEnvironment = NOTHING) -> str:
    """`env:NAME` reads the environment at load time, as engine.admin.tenant_file does for channel
    secrets, and only the names env allows (never ENGINE_*)."""
    match = re.match(r"^env:([A-Za-z_][A-Za-z0-9_]*)$", value)
    if match is None:
        return value
    try:
        return env.require(match.group(1))
    except NotAllowed as exc:
        raise DefinitionError([f"{path}: {exc}"]) from None


async def save_definitions(
    conn: asyncpg.Connection,
    tenant_id: str,
    section: dict[str, Any],
    known_bots: dict[str, str],
    *,
    known_channels: dict[str, str] | None = None,
    vault: Vault | None = None,
    env: TenantEnvironment = NOTHING,
) -> list[str]:
    """Validate, then upsert the tenant's rules, flows, tools, FAQs and documents.

    section: the file's raw `rules`, `flows`, `tools`, `faqs`, `documents` lists (other keys are
    ignored; a missing key leaves that kind untouched, a present one replaces it). known_bots and
    known_channels: {slug: id} of the tenant. vault encrypts tool secrets (needed when a tool has
    any). Raises DefinitionError before writing anything; returns warnings (unreachable nodes).
    Idempotent; runs in a transaction (a savepoint inside the caller's). Workers reload the tenant
    through the tables' NOTIFY triggers.
    """
    parsed = parse_section(section)
    present = {k for k in SECTIONS if k in section}
    existing_tools = {r["slug"] for r in await conn.fetch(sql.SELECT_TOOLS, tenant_id)}
    existing_flows = {
        (r["bot_id"], r["slug"]): {n["id"] for n in r["definition"].get("nodes", [])}
        for r in await conn.fetch(sql.SELECT_LATEST_FLOWS, tenant_id)
    }
    errors, warnings = check_references(parsed, known_bots, known_channels, existing_tools, existing_flows)
    configs = {r["cfgname"] for r in await conn.fetch(sql.SELECT_TEXT_SEARCH_CONFIGS)}
    errors += [
        f"documents[{i}].language: unknown text search configuration {d.language!r}"
        for i, d in enumerate(parsed.documents)
        if d.language not in configs
    ]
    if any(t.secrets for t in parsed.tools) and vault is None:
        errors.append("tools: a tool has secrets but no vault was given to encrypt them")
    if errors:
        raise DefinitionError(errors)
    bots = {**known_bots, **{v: v for v in known_bots.values()}}
    async with conn.transaction():
        if "rules" in present:
            await _save_rules(conn, tenant_id, parsed.rules)
        if "tools" in present:
            await _save_tools(conn, tenant_id, parsed.tools, vault, env)
        if "flows" in present:
            await _save_flows(conn, tenant_id, parsed.flows, bots)
        if "faqs" in present:
            ids = [str(stable_id(tenant_id, "faq", bots[f.bot], f.question)) for f in parsed.faqs]
            for fid, f in zip(ids, parsed.faqs, strict=True):
                await conn.execute(sql.UPSERT_FAQ, fid, tenant_id, bots[f.bot], f.question, f.answer, f.keywords)
            await conn.execute(sql.DELETE_FAQS_EXCEPT, tenant_id, ids)
        if "documents" in present:
            ids = [str(stable_id(tenant_id, "document", bots[d.bot], d.slug)) for d in parsed.documents]
            for did, d in zip(ids, parsed.documents, strict=True):
                await conn.execute(
                    sql.UPSERT_DOCUMENT, did, tenant_id, bots[d.bot], d.slug, d.title, d.body, d.url, d.language
                )
            await conn.execute(sql.DELETE_DOCUMENTS_EXCEPT, tenant_id, ids)
    for warning in warnings:
        log.warning("definition warning: %s", warning, extra={"tenant_id": tenant_id})
    return warnings


async def _save_rules(conn: asyncpg.Connection, tenant_id: str, rules: list[Rule]) -> None:
    ids = [str(stable_id(tenant_id, "rule", r.name)) for r in rules]
    for rid, r in zip(ids, rules, strict=True):
        conditions = r.conditions.model_dump(mode="json", by_alias=True, exclude_none=True) if r.conditions else None
        actions = [a.model_dump(mode="json", by_alias=True, exclude_none=True) for a in r.actions]
        await conn.execute(sql.UPSERT_RULE, rid, tenant_id, r.name, r.priority, conditions, actions, r.status)
    await conn.execute(sql.DELETE_RULES_EXCEPT, tenant_id, ids)


async def _save_tools(
    conn: asyncpg.Connection, tenant_id: str, tools: list[HttpToolDef], vault: Vault | None, env: TenantEnvironment
) -> None:
    ids = [str(stable_id(tenant_id, "tool", t.slug)) for t in tools]
    for i, (tid, t) in enumerate(zip(ids, tools, strict=True)):
        secrets = {k: resolve_secret(f"tools[{i}].secrets.{k}", v, env) for k, v in t.secrets.items()}
        token = None
        if secrets and vault is not None:
            token = vault.encrypt_unless_same(await conn.fetchval(sql.SELECT_TOOL_SECRETS, tid), secrets)
        await conn.execute(sql.UPSERT_TOOL, tid, tenant_id, t.slug, t.kind, t.config(), token)
    await conn.execute(sql.DELETE_TOOLS_EXCEPT, tenant_id, ids)


async def _save_flows(conn: asyncpg.Connection, tenant_id: str, flows: list[FlowDef], bots: dict[str, str]) -> None:
    defaults: list[str] = []
    for f in flows:
        bot = bots[f.bot]
        fid = flow_id(tenant_id, bot, f.slug)
        definition = f.definition()
        latest = await conn.fetchrow(sql.SELECT_LATEST_FLOW, fid)
        if latest is None or latest["definition"] != definition:
            version = 1 if latest is None else latest["version"] + 1
            await conn.execute(
                sql.INSERT_FLOW_VERSION, fid, version, tenant_id, bot, f.slug, f.name or f.slug, definition
            )
        if f.default:
            await conn.execute(sql.SET_DEFAULT_FLOW, bot, fid)
            defaults.append(bot)
    await conn.execute(sql.CLEAR_OTHER_DEFAULT_FLOWS, tenant_id, defaults)
