"""Tenant files read only the environment the operator allows (never ENGINE_*); loading a file that
names an existing tenant needs --update; one platform account belongs to one channel; every process
refuses a master key that does not decrypt the stored canary; rotate-key re-encrypts tool secrets too."""

from __future__ import annotations

import re
from pathlib import Path

import asyncpg
import pytest

from engine.admin.commands import load, rotate_key
from engine.admin.environment import TenantEnvironment
from engine.admin.tenant_file import BundleError, load_bundle, parse_bundle
from engine.crypto import CredentialError, Vault, generate_key
from engine.settings import Settings
from engine.store.credentials import check_master_key, master_key_ok

TENANT = """
tenant: {slug: acme, name: Acme}
bots: [{slug: b, name: B, welcome_text: "WELCOME"}]
channels:
  - {slug: tg, type: telegram, bot: b, external_id: acme_bot, secrets: {bot_token: "1:T", secret_token: SECRET}}
"""
TOOL = """
tools:
  - {slug: api, url: "https://api.example.com/x", headers: {K: "{{secret.key}}"}, secrets: {key: "TOOLKEY"}}
"""


def tenant(welcome: str = "Hi", secret: str = "s", tool_key: str | None = None, slug: str = "acme") -> str:
    text = TENANT.replace("WELCOME", welcome).replace("SECRET", secret).replace("acme", slug)
    return text + (TOOL.replace("TOOLKEY", tool_key) if tool_key else "")


def test_tenant_files_read_only_allowed_names(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ENGINE_MASTER_KEY", "the-master-key")
    monkeypatch.setenv("SHOP_GREETING", "Hello from the shop")
    monkeypatch.setenv("OTHER", "not for tenants")
    allow = TenantEnvironment.allowing("SHOP_*,ENGINE_MASTER_KEY")  # ENGINE_* stays out whatever the list says
    assert parse_bundle(tenant("${SHOP_GREETING}"), env=allow).bots[0].welcome_text == "Hello from the shop"
    assert parse_bundle(tenant("${OTHER:-fallback}"), env=allow).bots[0].welcome_text == "fallback"
    with pytest.raises(BundleError, match=re.escape("OTHER is not allowed (add it to ENGINE_TENANT_ENV)")):
        parse_bundle(tenant("${OTHER}"), env=allow)
    for text in ("${ENGINE_MASTER_KEY}", "${ENGINE_MASTER_KEY:-x}"):
        with pytest.raises(BundleError, match="ENGINE_MASTER_KEY is the engine's own"):
            parse_bundle(tenant(text), env=allow)


async def test_env_secrets_are_allowed_names_only(
    pool: asyncpg.Pool, vault: Vault, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ENGINE_MASTER_KEY", "the-master-key")
    monkeypatch.setenv("TG_SECRET", "tg-from-env")
    allow = TenantEnvironment.allowing("TG_SECRET,ENGINE_*")
    with pytest.raises(BundleError, match=re.escape("channels[0].secrets.secret_token: environment variable ENGINE")):
        await load_bundle(pool, vault, parse_bundle(tenant(secret="env:ENGINE_MASTER_KEY")), env=allow)
    with pytest.raises(BundleError, match=re.escape("tools[0].secrets.key: environment variable ENGINE_MASTER_KEY")):
        await load_bundle(pool, vault, parse_bundle(tenant(tool_key="env:ENGINE_MASTER_KEY")), env=allow)
    assert await pool.fetchval("SELECT count(*) FROM channels") == 0  # nothing written
    await load_bundle(pool, vault, parse_bundle(tenant(secret="env:TG_SECRET")), env=allow)
    stored = vault.decrypt(await pool.fetchval("SELECT credentials FROM channels"))
    assert stored == {"bot_token": "1:T", "secret_token": "tg-from-env"}


async def test_an_existing_tenant_is_updated_only_when_asked(pool: asyncpg.Pool, vault: Vault) -> None:
    await load_bundle(pool, vault, parse_bundle(tenant("first")))
    with pytest.raises(BundleError, match=re.escape("tenant.slug: tenant 'acme' exists; `engine load --update FILE`")):
        await load_bundle(pool, vault, parse_bundle(tenant("second")))
    assert await pool.fetchval("SELECT welcome_text FROM bot_configuration") == "first"
    await load_bundle(pool, vault, parse_bundle(tenant("second")), update=True)
    assert await pool.fetchval("SELECT welcome_text FROM bot_configuration") == "second"


async def test_one_platform_account_belongs_to_one_channel(pool: asyncpg.Pool, vault: Vault) -> None:
    await load_bundle(pool, vault, parse_bundle(tenant()))
    with pytest.raises(BundleError, match=re.escape("channels[0].external_id: telegram account 'acme_bot' belongs")):
        await load_bundle(pool, vault, parse_bundle(tenant().replace("slug: acme,", "slug: other,")))
    with pytest.raises(asyncpg.UniqueViolationError):
        await pool.execute(
            "INSERT INTO channels (id, tenant_id, slug, type, external_id) "
            "SELECT gen_random_uuid(), tenant_id, 'dup', type, external_id FROM channels"
        )


async def test_engine_load_cli_needs_update_for_an_existing_tenant(
    settings: Settings, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "t.yaml"
    path.write_text(tenant("one"))
    assert await load(settings, path) == 0
    path.write_text(tenant("two"))
    assert await load(settings, path) == 2
    assert "engine load --update" in capsys.readouterr().err
    assert await load(settings, path, update=True) == 0


async def test_a_wrong_or_missing_master_key_is_refused(settings: Settings, pool: asyncpg.Pool) -> None:
    with pytest.raises(CredentialError, match="not set"):
        await check_master_key(pool, "")
    vault = await check_master_key(pool, settings.master_key)  # the first start writes the canary
    assert await master_key_ok(pool, vault)
    with pytest.raises(CredentialError, match="does not decrypt the stored key canary"):
        await check_master_key(pool, generate_key())
    assert not await master_key_ok(pool, Vault(generate_key()))


async def test_a_wrong_key_cannot_write_the_canary_over_stored_credentials(
    settings: Settings, pool: asyncpg.Pool, vault: Vault
) -> None:
    await load_bundle(pool, vault, parse_bundle(tenant()))  # credentials stored, no canary yet
    with pytest.raises(CredentialError, match="does not decrypt"):
        await check_master_key(pool, generate_key())
    assert await pool.fetchval("SELECT count(*) FROM key_canary") == 0
    await check_master_key(pool, settings.master_key)
    assert await pool.fetchval("SELECT count(*) FROM key_canary") == 1


async def test_rotate_key_re_encrypts_tool_secrets_and_the_canary(
    settings: Settings, pool: asyncpg.Pool, vault: Vault, capsys: pytest.CaptureFixture[str]
) -> None:
    await load_bundle(pool, vault, parse_bundle(tenant(tool_key="tool-secret")))
    await check_master_key(pool, settings.master_key)
    new = generate_key()
    assert await rotate_key(settings.model_copy(update={"master_key": f"{new},{settings.master_key}"})) == 0
    assert "1 channel credentials, 1 tool secrets, 1 key canary" in capsys.readouterr().out
    only_new = Vault(new)
    assert only_new.decrypt(await pool.fetchval("SELECT secrets FROM tools")) == {"key": "tool-secret"}
    assert only_new.decrypt(await pool.fetchval("SELECT credentials FROM channels"))["secret_token"] == "s"
    await check_master_key(pool, new)  # the new key alone starts every process
    with pytest.raises(CredentialError):
        await check_master_key(pool, settings.master_key)
