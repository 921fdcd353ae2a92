"""`engine load FILE`: a tenant as code (YAML or JSON), created or updated idempotently.

Ids are derived from slugs (tenant slug, bot slug, channel slug), so loading the same file twice
changes nothing and a channel's webhook URL stays the same across loads. A secret written as
"env:NAME" is read from the environment at load time, so files can be committed without secrets;
only the names the operator allows (engine.admin.environment, ENGINE_TENANT_ENV) can be read. A file
that names a tenant that exists is an update, and only when the caller says so (`engine load --update`).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import asyncpg
import orjson
import yaml
from pydantic import Field, ValidationError, field_validator

from engine.admin.environment import NOTHING, NotAllowed, TenantEnvironment
from engine.admin.sections import DefinitionError, resolve_secret, save_definitions
from engine.crypto import Vault
from engine.models import ChannelType, stable_id
from engine.recovery.setup import SECTIONS as RECOVERY_SECTIONS
from engine.recovery.setup import RecoveryDefinitionError, save_recovery
from engine.store import tenants as store
from engine.validation import Strict, TimeZone

SLUG = r"^[a-z0-9][a-z0-9_\-]{0,62}$"


class BundleError(ValueError):
    """The file is invalid; the message names the path of each bad field."""


class TenantSpec(Strict):
    slug: str = Field(pattern=SLUG)
    name: str
    timezone: TimeZone = "UTC"


class BotSpec(Strict):
    slug: str = Field(pattern=SLUG)
    name: str
    welcome_text: str = "Hello {name}!"
    echo: bool = True
    settings: dict[str, Any] = {}


class ChannelSpec(Strict):
    slug: str = Field(pattern=SLUG)
    type: ChannelType
    bot: str | None = None
    external_id: str | None = None
    active: bool = True
    secrets: dict[str, str] = {}
    config: dict[str, Any] = {}

    @field_validator("config")
    @classmethod
    def _capture_option(cls, config: dict[str, Any]) -> dict[str, Any]:
        """Webhook capture (docs/loadtest.md): true, false or {sample: 0..1}."""
        option = config.get("capture")
        if option is None or isinstance(option, bool):
            return config
        sample = option.get("sample", 1.0) if isinstance(option, dict) else None
        if isinstance(sample, bool) or not isinstance(sample, int | float) or not 0 <= sample <= 1:
            raise ValueError("capture: true, false or {sample: a number from 0 to 1}")
        return config


class Bundle(Strict):
    tenant: TenantSpec
    bots: list[BotSpec] = []
    channels: list[ChannelSpec] = []
    # The brain's sections (routing rules, flows, tools, FAQs, documents) are validated by their
    # own models when saved; see engine.store.catalog.
    rules: list[dict[str, Any]] = []
    flows: list[dict[str, Any]] = []
    tools: list[dict[str, Any]] = []
    faqs: list[dict[str, Any]] = []
    documents: list[dict[str, Any]] = []
    # Recovery campaigns (engine.recovery.setup validates and saves them).
    recovery: dict[str, Any] | None = None
    templates: list[dict[str, Any]] = []
    campaigns: list[dict[str, Any]] = []

    def check_references(self) -> None:
        bots = {b.slug for b in self.bots}
        for i, channel in enumerate(self.channels):
            if channel.bot is not None and channel.bot not in bots:
                raise BundleError(f"channels[{i}].bot: unknown bot {channel.bot!r} (bots: {sorted(bots)})")
        for kind, items in (("bots", self.bots), ("channels", self.channels)):
            slugs = [item.slug for item in items]
            if dup := {s for s in slugs if slugs.count(s) > 1}:
                raise BundleError(f"{kind}: duplicate slug {sorted(dup)}")


def format_errors(exc: ValidationError) -> str:
    lines = []
    for err in exc.errors():
        path = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in err["loc"]).lstrip(".")
        lines.append(f"{path}: {err['msg']}")
    return "\n".join(lines)


_ENV_EXPANSION = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def expand_env(text: str, env: TenantEnvironment = NOTHING) -> str:
    """${NAME} and ${NAME:-default} are replaced from the environment before parsing (as in
    docker-compose files), so one file serves several environments; a name env does not allow is
    unset (its default applies). ENGINE_* is never read. Comment lines are left as they are."""

    def value(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(2)
        found = env.get(name)
        if found is not None:
            return found
        if default is None or name.upper().startswith("ENGINE_"):
            try:
                env.require(name)
            except NotAllowed as exc:
                hint = "" if name.upper().startswith("ENGINE_") else f" (write ${{{name}:-default}} for a default)"
                raise BundleError(f"{exc}{hint}") from None
        return default or ""

    return "\n".join(
        line if line.lstrip().startswith("#") else _ENV_EXPANSION.sub(value, line) for line in text.split("\n")
    )


def parse_bundle(text: str, name: str = "bundle", env: TenantEnvironment = NOTHING) -> Bundle:
    text = expand_env(text, env)
    try:
        data = orjson.loads(text) if name.endswith(".json") else yaml.safe_load(text)
    except (orjson.JSONDecodeError, yaml.YAMLError) as exc:
        raise BundleError(f"{name}: not valid {'JSON' if name.endswith('.json') else 'YAML'}: {exc}") from None
    try:
        bundle = Bundle.model_validate(data)
    except ValidationError as exc:
        raise BundleError(format_errors(exc)) from None
    bundle.check_references()
    return bundle


def read_bundle(path: Path, env: TenantEnvironment = NOTHING) -> Bundle:
    return parse_bundle(path.read_text(), path.name, env)


def tenant_id(slug: str) -> str:
    return str(stable_id("tenant", slug))


def bot_id(tenant: str, slug: str) -> str:
    return str(stable_id(tenant, "bot", slug))


def channel_id(tenant: str, slug: str) -> str:
    return str(stable_id(tenant, "channel", slug))


BRAIN_SECTIONS = ("rules", "flows", "tools", "faqs", "documents")


async def load_bundle(
    pool: asyncpg.Pool,
    vault: Vault,
    bundle: Bundle,
    *,
    update: bool = False,
    env: TenantEnvironment = NOTHING,
) -> tuple[dict[str, str], list[str]]:
    """Create the tenant and everything in the bundle in one transaction, or update it when update is
    true (a tenant that exists is refused otherwise: two files must not overwrite each other's tenant
    by choosing the same slug). Returns ({channel slug: channel id}, warnings). A brain section (rules,
    flows, ...) present in the file replaces that kind of definition for the tenant; one absent leaves
    it alone. env: the variables env:NAME secrets may read."""
    tid = tenant_id(bundle.tenant.slug)
    bots = {b.slug: bot_id(tid, b.slug) for b in bundle.bots}
    channel_ids: dict[str, str] = {}
    async with pool.acquire() as conn, conn.transaction():
        t = bundle.tenant
        if not update and await store.tenant_exists(conn, tid):
            raise BundleError(f"tenant.slug: tenant {t.slug!r} exists; `engine load --update FILE` updates it")
        await store.upsert_tenant(conn, tid, t.slug, t.name, t.timezone)
        for b in bundle.bots:
            await store.upsert_bot(conn, bots[b.slug], tid, b.slug, b.name, b.welcome_text, b.echo, b.settings)
        section = {k: getattr(bundle, k) for k in BRAIN_SECTIONS if k in bundle.model_fields_set}
        try:
            for i, c in enumerate(bundle.channels):
                secrets = {k: resolve_secret(f"channels[{i}].secrets.{k}", v, env) for k, v in c.secrets.items()}
                cid = channel_id(tid, c.slug)
                credentials = vault.encrypt_unless_same(await store.channel_credentials(conn, cid), secrets)
                bot = bots[c.bot] if c.bot else None
                try:
                    await store.upsert_channel(
                        conn, cid, tid, bot, c.slug, c.type.value, c.external_id, credentials, c.config, c.active
                    )
                except asyncpg.UniqueViolationError:  # (type, external_id): one account, one channel
                    raise BundleError(
                        f"channels[{i}].external_id: {c.type.value} account {c.external_id!r} "
                        "belongs to another channel"
                    ) from None
                channel_ids[c.slug] = cid
            warnings = await save_definitions(
                conn, tid, section, bots, known_channels=channel_ids, vault=vault, env=env
            ) if section else []  # fmt: skip
        except DefinitionError as exc:
            raise BundleError(str(exc)) from None
        if recovery := {k: getattr(bundle, k) for k in RECOVERY_SECTIONS if k in bundle.model_fields_set}:
            try:

                def secret(path: str, value: str) -> str:
                    return resolve_secret(path, value, env)

                await save_recovery(conn, tid, recovery, bots, vault, secret, bundle.flows)
            except (RecoveryDefinitionError, DefinitionError) as exc:
                raise BundleError(str(exc)) from None
    return channel_ids, warnings
