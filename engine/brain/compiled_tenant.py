"""One tenant's compiled brain, built from its definition rows: the routing matcher, the latest
version of each flow, FAQ indexes, tools, and what the fallbacks need (bots, channels).

Built off to the side and swapped in whole, so a message in flight finishes on the snapshot it
started with. Pure: the rows come from engine.store.catalog.fetch_all.
"""

from __future__ import annotations

import itertools
import logging
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import asyncpg
from pydantic import ValidationError

from engine.brain.flows.faq import FaqIndex
from engine.brain.flows.flow_models import FlowDef
from engine.brain.flows.interpreter import Flow
from engine.brain.routing.compiler import Names
from engine.brain.routing.matcher import TenantRouter, compile_rules
from engine.brain.routing.rule_models import Rule
from engine.brain.tools.runner import Toolbox
from engine.brain.tools.tool_models import HttpTool
from engine.crypto import CredentialError, Vault

log = logging.getLogger(__name__)
_versions = itertools.count(1)
RULE_COLUMNS = ("name", "priority", "status", "conditions", "actions")


@dataclass(frozen=True, slots=True)
class Bot:
    id: str
    slug: str
    default_flow_id: str | None
    welcome_text: str
    echo: bool


@dataclass(frozen=True, slots=True)
class TenantState:
    tenant_id: str
    version: int  # increases with every build in this process
    timezone: str
    router: TenantRouter
    bots: dict[str, Bot]
    channels: dict[str, tuple[str, str | None]]  # channel id -> (type, bot id)
    flows: dict[str, Flow]  # flow id -> latest version
    flows_by_slug: dict[tuple[str, str], Flow]  # (bot id, slug) -> latest version
    faqs: dict[str, FaqIndex]  # bot id -> index
    toolbox: Toolbox
    problems: list[str] = field(default_factory=list)  # stored rows that no longer validate

    def default_flow(self, bot_id: str | None) -> Flow | None:
        bot = self.bots.get(bot_id or "")
        return self.flows.get(bot.default_flow_id or "") if bot else None


def flow_from_row(row: Any) -> Flow:
    return Flow.of(row["id"], row["version"], row["bot_id"], FlowDef.model_validate(row["definition"]))


def build_tenants(
    rows: dict[str, list[Any]], pool: asyncpg.Pool, http: aiohttp.ClientSession, vault: Vault | None
) -> dict[str, TenantState]:
    """rows: fetch_all's result, for one tenant or all of them."""
    by_tenant: dict[str, dict[str, list[Any]]] = defaultdict(lambda: defaultdict(list))
    for table, table_rows in rows.items():
        for row in table_rows:
            by_tenant[row["id"] if table == "tenants" else row["tenant_id"]][table].append(row)
    return {
        t["id"]: build_tenant(t["id"], t["timezone"], by_tenant[t["id"]], pool, http, vault) for t in rows["tenants"]
    }


def build_tenant(
    tenant_id: str,
    timezone: str,
    rows: dict[str, list[Any]],
    pool: asyncpg.Pool,
    http: aiohttp.ClientSession,
    vault: Vault | None,
) -> TenantState:
    problems: list[str] = []
    bots = {r["id"]: Bot(r["id"], r["slug"], r["default_flow_id"], r["welcome_text"], r["echo"]) for r in rows["bots"]}
    channels = {r["id"]: (r["type"], r["bot_id"]) for r in rows["channels"]}
    names = Names(
        timezone=timezone,
        bots={**{b.slug: b.id for b in bots.values()}, **{b.id: b.id for b in bots.values()}},
        channels={r["slug"]: r["id"] for r in rows["channels"]},
    )
    rules = []
    for r in rows["rules"]:
        try:
            rules.append(
                Rule.model_validate({k: r[k] for k in ("name", "priority", "status", "conditions", "actions")})
            )
        except ValidationError as exc:
            problems.append(f"rule {r['name']!r}: {exc.errors()[0]['msg']}")
    router = compile_rules(rules, names)
    for channel_id, (channel_type, _) in channels.items():
        router.matcher(channel_id, channel_type)  # built now rather than on a channel's first message
    flows: dict[str, Flow] = {}
    for r in rows["flows"]:
        try:
            flows[r["id"]] = flow_from_row(r)
        except ValidationError as exc:
            problems.append(f"flow {r['slug']!r} v{r['version']}: {exc.errors()[0]['msg']}")
    pairs: dict[str, list[tuple[str, str, list[str]]]] = defaultdict(list)
    for r in rows["faqs"]:
        pairs[r["bot_id"]].append((r["question"], r["answer"], list(r["keywords"])))
    tools = {}
    for r in rows["tools"]:
        try:
            secrets = vault.decrypt(r["secrets"]) if vault is not None else {}
            tools[r["slug"]] = HttpTool.from_config(r["slug"], r["config"], secrets, r["id"])
        except (CredentialError, ValidationError) as exc:
            problems.append(f"tool {r['slug']!r}: {exc}")
    for problem in problems:
        log.error("definition skipped: %s", problem, extra={"tenant_id": tenant_id})
    return TenantState(
        tenant_id=tenant_id,
        version=next(_versions),
        timezone=timezone,
        router=router,
        bots=bots,
        channels=channels,
        flows=flows,
        flows_by_slug={(f.bot_id, f.slug): f for f in flows.values()},
        faqs={bot: FaqIndex.build(p) for bot, p in pairs.items()},
        toolbox=Toolbox(pool, http, tools),
        problems=problems,
    )
