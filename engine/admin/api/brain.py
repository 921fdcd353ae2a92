"""Routing rules, flows (every change a new version; validate without saving), tools (secrets
write-only), FAQs and documents, one at a time, checked by the tenant file's code. Writes reach the
workers through the tables' NOTIFY triggers within a second, as `engine load` changes do."""

from __future__ import annotations

from typing import Any

import asyncpg

from engine.admin.api.checks import check_identity, check_section_item, one_or_404, refuse_env_references
from engine.admin.api.context import Call
from engine.admin.api.models import DocumentOut, FaqOut, FlowOut, FlowVersionOut, RuleOut, ToolOut, ValidationOut
from engine.admin.api.routing import ApiError, Reply, Route, not_found
from engine.admin.sections import DocumentDef, FaqDef, flow_id
from engine.brain.flows.flow_models import FlowDef
from engine.brain.routing.rule_models import Rule
from engine.brain.tools.tool_models import HttpToolDef
from engine.crypto import CredentialError
from engine.models import stable_id
from engine.store import api_config as sql
from engine.store import catalog as dsql

READ, WRITE = ("read", "write"), ("write",)


# --- rules ----------------------------------------------------------------------------------------------


async def list_rules(call: Call) -> Reply:
    async with call.db() as conn:
        return Reply([RuleOut(**dict(r)) for r in await conn.fetch(sql.SELECT_RULES, call.tenant_id)])


async def get_rule(call: Call) -> Reply:
    async with call.db() as conn:
        return Reply(RuleOut(**dict(await one_or_404(conn, sql.SELECT_RULE, call.tenant_id, call.id(), what="rule"))))


async def _save_rule(call: Call, existing: str | None) -> Reply:
    async with call.db() as conn:
        if existing:  # an id of nothing (or of another tenant) is 404 whatever the body
            await one_or_404(conn, sql.SELECT_RULE, call.tenant_id, existing, what="rule")
        section, _, _ = await check_section_item(conn, call.tenant_id, "rules", call.body)
        rule = section.rules[0]
        rid = str(stable_id(call.tenant_id, "rule", rule.name))
        check_identity(existing, rid, await conn.fetchrow(sql.SELECT_RULE, call.tenant_id, existing or rid),
                        "rules", "name")  # fmt: skip
        conditions = (
            rule.conditions.model_dump(mode="json", by_alias=True, exclude_none=True) if rule.conditions else None
        )
        actions = [a.model_dump(mode="json", by_alias=True, exclude_none=True) for a in rule.actions]
        await conn.execute(dsql.UPSERT_RULE, rid, call.tenant_id, rule.name, rule.priority, conditions, actions,
                           rule.status)  # fmt: skip
        await call.audit_saved(conn, "rules", rid, existing)
        row = await conn.fetchrow(sql.SELECT_RULE, call.tenant_id, rid)
    return Reply(RuleOut(**dict(row)), 200 if existing else 201)


async def create_rule(call: Call) -> Reply:
    return await _save_rule(call, None)


async def update_rule(call: Call) -> Reply:
    return await _save_rule(call, call.id(what="rule"))


# --- flows ----------------------------------------------------------------------------------------------


def _flow_out(row: asyncpg.Record) -> FlowOut:
    data = {k: row[k] for k in ("id", "version", "bot", "bot_id", "slug", "name", "definition", "created_at")}
    return FlowOut(**data, default=bool(row["is_default"]))


async def list_flows(call: Call) -> Reply:
    async with call.db() as conn:
        return Reply([_flow_out(r) for r in await conn.fetch(sql.SELECT_FLOWS, call.tenant_id)])


async def get_flow(call: Call) -> Reply:
    async with call.db() as conn:
        return Reply(_flow_out(await one_or_404(conn, sql.SELECT_FLOW, call.tenant_id, call.id(), None, what="flow")))


async def list_flow_versions(call: Call) -> Reply:
    async with call.db() as conn:
        rows = await conn.fetch(sql.SELECT_FLOW_VERSIONS, call.tenant_id, call.id(what="flow"))
    if not rows:
        raise not_found("flow")
    return Reply([FlowVersionOut(**dict(r)) for r in rows])


async def get_flow_version(call: Call) -> Reply:
    try:
        version = int(call.params["version"])
    except ValueError:
        raise not_found("flow version") from None
    async with call.db() as conn:
        row = await one_or_404(conn, sql.SELECT_FLOW, call.tenant_id, call.id(), version, what="flow version")
    return Reply(_flow_out(row))


async def validate_flow(call: Call) -> Reply:
    """The errors and warnings saving this flow would give, without saving anything."""
    async with call.db() as conn:
        try:
            _, _, warnings = await check_section_item(conn, call.tenant_id, "flows", call.body)
        except ApiError as exc:
            if exc.status != 422:
                raise
            return Reply(ValidationOut(valid=False, errors=exc.errors, warnings=[]))  # type: ignore[arg-type]
    return Reply(ValidationOut(valid=True, errors=[], warnings=warnings))


async def _save_flow(call: Call, existing: str | None) -> Reply:
    async with call.db() as conn:
        current = None
        if existing:
            current = await one_or_404(conn, sql.SELECT_FLOW, call.tenant_id, existing, None, what="flow")
        section, ctx, warnings = await check_section_item(conn, call.tenant_id, "flows", call.body)
        flow = section.flows[0]
        bot = ctx.bots.get(flow.bot) or flow.bot  # a slug, or already an id
        fid = flow_id(call.tenant_id, bot, flow.slug)
        latest = await conn.fetchrow(dsql.SELECT_LATEST_FLOW, fid)
        check_identity(existing, fid, current if existing else latest, "flows", "bot and slug")
        definition = flow.definition()
        version = latest["version"] if latest else 0
        if latest is None or latest["definition"] != definition:
            version += 1  # a new version; conversations running an older one keep it
            await conn.execute(dsql.INSERT_FLOW_VERSION, fid, version, call.tenant_id, bot, flow.slug,
                               flow.name or flow.slug, definition)  # fmt: skip
        if flow.default:
            await conn.execute(dsql.SET_DEFAULT_FLOW, bot, fid)
        else:
            await conn.execute(sql.CLEAR_DEFAULT_FLOW, call.tenant_id, bot, fid)
        before = {"id": fid, "version": latest["version"]} if latest else None
        await call.audit(
            conn, "update" if existing else "create", "flows", fid, before, {"id": fid, "version": version}
        )
        row = await conn.fetchrow(sql.SELECT_FLOW, call.tenant_id, fid, None)
    headers = {"X-Warnings": str(len(warnings))} if warnings else {}
    return Reply(_flow_out(row), 200 if existing else 201, headers)


async def create_flow(call: Call) -> Reply:
    return await _save_flow(call, None)


async def update_flow(call: Call) -> Reply:
    return await _save_flow(call, call.id(what="flow"))


# --- tools ----------------------------------------------------------------------------------------------


def _tool_out(call: Call, row: asyncpg.Record) -> ToolOut:
    names: list[str] = []
    if row["secrets"]:
        try:
            names = sorted(call.vault().decrypt(row["secrets"]))
        except (ApiError, CredentialError):
            names = []
    data = {k: row[k] for k in ("id", "slug", "kind", "config", "created_at", "updated_at")}
    return ToolOut(**data, secret_names=names)


async def list_tools(call: Call) -> Reply:
    async with call.db() as conn:
        return Reply([_tool_out(call, r) for r in await conn.fetch(sql.SELECT_TOOLS, call.tenant_id)])


async def get_tool(call: Call) -> Reply:
    async with call.db() as conn:
        return Reply(_tool_out(call, await one_or_404(conn, sql.SELECT_TOOL, call.tenant_id, call.id(), what="tool")))


async def _save_tool(call: Call, existing: str | None) -> Reply:
    raw: dict[str, Any] = dict(call.body)
    given = raw.get("secrets") if isinstance(raw.get("secrets"), dict) else {}
    refuse_env_references("tools", given)  # type: ignore[arg-type]
    vault = call.vault()
    async with call.db() as conn:
        stored_row = None
        if existing:
            stored_row = await one_or_404(conn, sql.SELECT_TOOL, call.tenant_id, existing, what="tool")
        stored = vault.decrypt(stored_row["secrets"]) if stored_row and stored_row["secrets"] else {}
        # Secrets are write-only: those given replace the stored ones of the same name, the others stay.
        raw["secrets"] = {**stored, **(given or {})}
        section, _, _ = await check_section_item(conn, call.tenant_id, "tools", raw)
        tool = section.tools[0]
        tid = str(stable_id(call.tenant_id, "tool", tool.slug))
        check_identity(existing, tid, stored_row if existing else await conn.fetchrow(sql.SELECT_TOOL,
                        call.tenant_id, tid), "tools", "slug")  # fmt: skip
        old = stored_row["secrets"] if stored_row else None
        token = vault.encrypt_unless_same(old, tool.secrets) if tool.secrets else None
        await conn.execute(dsql.UPSERT_TOOL, tid, call.tenant_id, tool.slug, tool.kind, tool.config(), token)
        await call.audit_saved(conn, "tools", tid, existing)
        row = await conn.fetchrow(sql.SELECT_TOOL, call.tenant_id, tid)
    return Reply(_tool_out(call, row), 200 if existing else 201)


async def create_tool(call: Call) -> Reply:
    return await _save_tool(call, None)


async def update_tool(call: Call) -> Reply:
    return await _save_tool(call, call.id(what="tool"))


# --- FAQs and documents ---------------------------------------------------------------------------------


async def list_faqs(call: Call) -> Reply:
    async with call.db() as conn:
        return Reply([FaqOut(**dict(r)) for r in await conn.fetch(sql.SELECT_FAQS, call.tenant_id)])


async def get_faq(call: Call) -> Reply:
    async with call.db() as conn:
        return Reply(FaqOut(**dict(await one_or_404(conn, sql.SELECT_FAQ, call.tenant_id, call.id(), what="faq"))))


async def _save_faq(call: Call, existing: str | None) -> Reply:
    async with call.db() as conn:
        if existing:
            await one_or_404(conn, sql.SELECT_FAQ, call.tenant_id, existing, what="faq")
        section, ctx, _ = await check_section_item(conn, call.tenant_id, "faqs", call.body)
        faq = section.faqs[0]
        bot = ctx.bots.get(faq.bot) or faq.bot
        if existing is None:
            fid = str(stable_id(call.tenant_id, "faq", bot, faq.question))
            if await conn.fetchrow(sql.SELECT_FAQ, call.tenant_id, fid) is not None:
                raise ApiError(409, "exists", f"this bot has that question: PUT /faqs/{fid} to change it")
            await conn.execute(dsql.UPSERT_FAQ, fid, call.tenant_id, bot, faq.question, faq.answer, faq.keywords)
        else:
            fid = existing
            await conn.execute(sql.UPDATE_FAQ, call.tenant_id, fid, bot, faq.question, faq.answer, faq.keywords)
        await call.audit_saved(conn, "faqs", fid, existing)
        row = await conn.fetchrow(sql.SELECT_FAQ, call.tenant_id, fid)
    return Reply(FaqOut(**dict(row)), 200 if existing else 201)


async def create_faq(call: Call) -> Reply:
    return await _save_faq(call, None)


async def update_faq(call: Call) -> Reply:
    return await _save_faq(call, call.id(what="faq"))


async def list_documents(call: Call) -> Reply:
    async with call.db() as conn:
        return Reply([DocumentOut(**dict(r)) for r in await conn.fetch(sql.SELECT_DOCUMENTS, call.tenant_id)])


async def get_document(call: Call) -> Reply:
    async with call.db() as conn:
        row = await one_or_404(conn, sql.SELECT_DOCUMENT, call.tenant_id, call.id(), what="document")
    return Reply(DocumentOut(**dict(row)))


async def _save_document(call: Call, existing: str | None) -> Reply:
    async with call.db() as conn:
        if existing:
            await one_or_404(conn, sql.SELECT_DOCUMENT, call.tenant_id, existing, what="document")
        section, ctx, _ = await check_section_item(conn, call.tenant_id, "documents", call.body)
        d = section.documents[0]
        bot = ctx.bots.get(d.bot) or d.bot
        did = str(stable_id(call.tenant_id, "document", bot, d.slug))
        check_identity(existing, did, await conn.fetchrow(sql.SELECT_DOCUMENT, call.tenant_id, existing or did),
                        "documents", "slug")  # fmt: skip
        await conn.execute(dsql.UPSERT_DOCUMENT, did, call.tenant_id, bot, d.slug, d.title, d.body, d.url, d.language)
        await call.audit_saved(conn, "documents", did, existing)
        row = await conn.fetchrow(sql.SELECT_DOCUMENT, call.tenant_id, did)
    return Reply(DocumentOut(**dict(row)), 200 if existing else 201)


async def create_document(call: Call) -> Reply:
    return await _save_document(call, None)


async def update_document(call: Call) -> Reply:
    return await _save_document(call, call.id(what="document"))


# --- deletes: one statement each, the same shape ------------------------------------------------------------

_DELETES = {"rules": sql.DELETE_RULE, "tools": sql.DELETE_TOOL, "faqs": sql.DELETE_FAQ,
            "documents": sql.DELETE_DOCUMENT}  # fmt: skip


def _deleter(kind: str) -> Any:
    async def delete(call: Call) -> Reply:
        rid = call.id(what=kind[:-1])
        async with call.db() as conn:
            if await conn.fetchval(_DELETES[kind], call.tenant_id, rid) is None:
                raise not_found(kind[:-1])
            await call.audit(conn, "delete", kind, rid, {"id": rid}, None)
        return Reply(None, 204)

    delete.__name__ = f"delete_{kind}"
    return delete


ROUTES = [
    Route("GET", "/rules", list_rules, "List routing rules, by priority", "rules", READ, response=list[RuleOut]),
    Route("POST", "/rules", create_rule, "Create a routing rule", "rules", WRITE, body=Rule, response=RuleOut,
          status=201, errors=(409,), validated_by_handler=True),
    Route("GET", "/rules/{id}", get_rule, "Get a routing rule", "rules", READ, response=RuleOut, errors=(404,)),
    Route("PUT", "/rules/{id}", update_rule, "Replace a routing rule (same name)", "rules", WRITE, body=Rule,
          response=RuleOut, errors=(404,), validated_by_handler=True),
    Route("DELETE", "/rules/{id}", _deleter("rules"), "Delete a routing rule", "rules", WRITE, status=204,
          errors=(404,)),
    Route("GET", "/flows", list_flows, "List flows (latest versions)", "flows", READ, response=list[FlowOut]),
    Route("POST", "/flows", create_flow, "Create a flow (version 1)", "flows", WRITE, body=FlowDef, response=FlowOut,
          status=201, errors=(409,), validated_by_handler=True),
    Route("POST", "/flows/validate", validate_flow, "Check a flow without saving it", "flows", WRITE, body=FlowDef,
          response=ValidationOut, validated_by_handler=True),
    Route("GET", "/flows/{id}", get_flow, "Get a flow's latest version", "flows", READ, response=FlowOut,
          errors=(404,)),
    Route("PUT", "/flows/{id}", update_flow, "Save a new version of a flow (same bot and slug)", "flows", WRITE,
          body=FlowDef, response=FlowOut, errors=(404,), validated_by_handler=True),
    Route("GET", "/flows/{id}/versions", list_flow_versions, "List a flow's versions, newest first", "flows", READ,
          response=list[FlowVersionOut], errors=(404,)),
    Route("GET", "/flows/{id}/versions/{version}", get_flow_version, "Get one version of a flow", "flows", READ,
          response=FlowOut, errors=(404,)),
    Route("GET", "/tools", list_tools, "List tools (secret names only)", "tools", READ, response=list[ToolOut]),
    Route("POST", "/tools", create_tool, "Create a tool; secrets are write-only", "tools", WRITE, body=HttpToolDef,
          response=ToolOut, status=201, errors=(409,), validated_by_handler=True),
    Route("GET", "/tools/{id}", get_tool, "Get a tool", "tools", READ, response=ToolOut, errors=(404,)),
    Route("PUT", "/tools/{id}", update_tool, "Replace a tool (secrets given replace those of the same name)", "tools",
          WRITE, body=HttpToolDef, response=ToolOut, errors=(404,), validated_by_handler=True),
    Route("DELETE", "/tools/{id}", _deleter("tools"), "Delete a tool", "tools", WRITE, status=204, errors=(404,)),
    Route("GET", "/faqs", list_faqs, "List FAQs", "faqs", READ, response=list[FaqOut]),
    Route("POST", "/faqs", create_faq, "Create a FAQ", "faqs", WRITE, body=FaqDef, response=FaqOut, status=201,
          errors=(409,), validated_by_handler=True),
    Route("GET", "/faqs/{id}", get_faq, "Get a FAQ", "faqs", READ, response=FaqOut, errors=(404,)),
    Route("PUT", "/faqs/{id}", update_faq, "Replace a FAQ", "faqs", WRITE, body=FaqDef, response=FaqOut,
          errors=(404,), validated_by_handler=True),
    Route("DELETE", "/faqs/{id}", _deleter("faqs"), "Delete a FAQ", "faqs", WRITE, status=204, errors=(404,)),
    Route("GET", "/documents", list_documents, "List knowledge-base documents", "documents", READ,
          response=list[DocumentOut]),
    Route("POST", "/documents", create_document, "Create a document", "documents", WRITE, body=DocumentDef,
          response=DocumentOut, status=201, errors=(409,), validated_by_handler=True),
    Route("GET", "/documents/{id}", get_document, "Get a document", "documents", READ, response=DocumentOut,
          errors=(404,)),
    Route("PUT", "/documents/{id}", update_document, "Replace a document (same bot and slug)", "documents", WRITE,
          body=DocumentDef, response=DocumentOut, errors=(404,), validated_by_handler=True),
    Route("DELETE", "/documents/{id}", _deleter("documents"), "Delete a document", "documents", WRITE, status=204,
          errors=(404,)),
]  # fmt: skip
