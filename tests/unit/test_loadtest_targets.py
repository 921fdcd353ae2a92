"""Targets from a tenant file read the environment as `engine load` does; a secrets file never reads ENGINE_*."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.admin.environment import TenantEnvironment
from engine.admin.tenant_file import channel_id, tenant_id
from engine.loadtest.targets import TargetError, check, from_secrets_file, from_tenant_file

TENANT = """
tenant: {slug: acme, name: Acme}
channels:
  - {slug: tg, type: telegram, secrets: {bot_token: "1:x", secret_token: "env:TG_SECRET"}}
  - {slug: tg2, type: telegram, secrets: {bot_token: "1:y", secret_token: "other"}}
  - {slug: wa, type: whatsapp, external_id: "555", secrets: {app_secret: "wa"}}
"""


def test_tenant_file_targets_the_first_channel_of_each_platform(tmp_path: Path) -> None:
    path = tmp_path / "tenant.yaml"
    path.write_text(TENANT)
    env = TenantEnvironment.allowing("TG_*", source={"TG_SECRET": "s3cret"})
    targets = from_tenant_file(path, env)
    assert targets["telegram"].channel_id == channel_id(tenant_id("acme"), "tg")
    assert targets["telegram"].secrets["secret_token"] == "s3cret"
    assert (targets["whatsapp"].external_id, targets["whatsapp"].path) == (
        "555",
        f"/webhooks/whatsapp/{channel_id(tenant_id('acme'), 'wa')}",
    )
    check(targets, {"telegram", "whatsapp"})
    with pytest.raises(TargetError, match="no slack channel"):
        check(targets, {"slack"})


def test_tenant_file_may_not_read_a_variable_it_is_not_allowed(tmp_path: Path) -> None:
    path = tmp_path / "tenant.yaml"
    path.write_text(TENANT)
    with pytest.raises(TargetError, match=r"channels\[0\]\.secrets\.secret_token: .*TG_SECRET is not allowed"):
        from_tenant_file(path, TenantEnvironment(source={"TG_SECRET": "s3cret"}))


def test_secrets_file_never_reads_the_engines_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "secrets.yaml"
    monkeypatch.setenv("ENGINE_MASTER_KEY", "not-for-you")
    path.write_text("telegram: {channel_id: c, secrets: {secret_token: env:ENGINE_MASTER_KEY}}\n")
    with pytest.raises(TargetError, match="the engine's own"):
        from_secrets_file(path)
    monkeypatch.setenv("LT_TG", "fine")
    path.write_text("telegram: {channel_id: c, secrets: {secret_token: env:LT_TG}}\n")
    assert from_secrets_file(path)["telegram"].secrets["secret_token"] == "fine"
