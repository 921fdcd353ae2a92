"""The channels a replay posts to, and how each request is signed for them.

A target is one channel of the engine under test: its id (the webhook URL's last part), its
external id (phone-number id, page id, Slack team) and its secrets. They come from the target's
tenant file (`--tenant-file`: the first channel of each platform) or from a secrets file
(`--channel-secrets`, YAML or JSON):

    telegram: {channel_id: 3f0c..., secrets: {secret_token: "..."}}
    whatsapp: {channel_id: 9a1e..., external_id: "106540352242922", secrets: {app_secret: "..."}}
    slack:    {channel_id: 77b2..., external_id: T0DEMO, secrets: {signing_secret: "..."}}
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import yaml

from engine.admin.environment import NOTHING, NotAllowed, TenantEnvironment
from engine.admin.tenant_file import channel_id, read_bundle, tenant_id
from engine.loadtest.records import PLATFORMS

ENV_REF = re.compile(r"^env:([A-Za-z_][A-Za-z0-9_]*)$")


class TargetError(ValueError):
    """The targets cannot be built (missing platform, secret or file); the message says which."""


@dataclass(frozen=True, slots=True)
class Target:
    platform: str
    channel_id: str
    external_id: str | None
    secrets: Mapping[str, str]

    @property
    def path(self) -> str:
        return f"/webhooks/{self.platform}/{self.channel_id}"


REQUIRED = {
    "telegram": "secret_token",
    "whatsapp": "app_secret",
    "messenger": "app_secret",
    "instagram": "app_secret",
    "slack": "signing_secret",
}


def _secret(value: str, where: str, env: TenantEnvironment) -> str:
    match = ENV_REF.match(value)
    if match is None:
        return value
    try:
        return env.require(match.group(1))
    except NotAllowed as exc:
        raise TargetError(f"{where}: {exc}") from None


def from_tenant_file(path: Path, env: TenantEnvironment = NOTHING) -> dict[str, Target]:
    """The first channel of each platform in a tenant file (ids derived as `engine load` does). The
    file reads the environment as `engine load` lets it: only the names env allows."""
    bundle = read_bundle(path, env)
    tid = tenant_id(bundle.tenant.slug)
    targets: dict[str, Target] = {}
    for i, channel in enumerate(bundle.channels):
        platform = channel.type.value
        if platform in targets or platform not in PLATFORMS:
            continue
        secrets = {k: _secret(v, f"channels[{i}].secrets.{k}", env) for k, v in channel.secrets.items()}
        targets[platform] = Target(platform, channel_id(tid, channel.slug), channel.external_id, secrets)
    return targets


def from_secrets_file(path: Path) -> dict[str, Target]:
    """The load tester's own file: `env:NAME` may read any variable but the engine's (ENGINE_*)."""
    env = TenantEnvironment(source=os.environ, prefixes=("",))
    doc = yaml.safe_load(path.read_text())
    if not isinstance(doc, dict):
        raise TargetError(f"{path}: a mapping of platform -> {{channel_id, external_id, secrets}} is expected")
    targets: dict[str, Target] = {}
    for platform, spec in doc.items():
        if platform not in PLATFORMS:
            raise TargetError(f"{path}: {platform}: unknown platform (one of {', '.join(PLATFORMS)})")
        if not isinstance(spec, dict) or not spec.get("channel_id") or not isinstance(spec.get("secrets"), dict):
            raise TargetError(f"{path}: {platform}: channel_id and secrets are required")
        secrets = {str(k): _secret(str(v), f"{platform}.secrets.{k}", env) for k, v in spec["secrets"].items()}
        external = spec.get("external_id")
        targets[platform] = Target(platform, str(spec["channel_id"]), str(external) if external else None, secrets)
    return targets


def check(targets: Mapping[str, Target], platforms: set[str]) -> None:
    """Raise TargetError unless every platform of the traffic has a target with its signing secret."""
    for platform in sorted(platforms):
        target = targets.get(platform)
        if target is None:
            raise TargetError(f"the traffic has {platform} requests but the target has no {platform} channel")
        if not target.secrets.get(REQUIRED[platform]):
            raise TargetError(f"{platform}: the target channel has no {REQUIRED[platform]}")


def sign(target: Target, body: bytes, content_type: str, now: float) -> dict[str, str]:
    """The headers the platform would send with body to this target (Slack's stamp is `now`)."""
    headers = {"Content-Type": content_type}
    secret = target.secrets.get(REQUIRED[target.platform], "")
    if target.platform == "telegram":
        headers["X-Telegram-Bot-Api-Secret-Token"] = secret
    elif target.platform == "slack":
        stamp = str(int(now))
        digest = hmac.new(secret.encode(), b"v0:" + stamp.encode() + b":" + body, hashlib.sha256).hexdigest()
        headers["X-Slack-Request-Timestamp"] = stamp
        headers["X-Slack-Signature"] = f"v0={digest}"
    else:  # the Meta platforms
        digest = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
        headers["X-Hub-Signature-256"] = f"sha256={digest}"
    return headers
