"""Which requests the receiver captures: the channel's config wins over the settings; sampling."""

from __future__ import annotations

import random
from typing import Any

import pytest

from engine.ingress.capture import kept_headers, outcome_of, sample_rate
from engine.models import ChannelInfo, ChannelType
from engine.settings import Settings


def channel(config: dict[str, Any]) -> ChannelInfo:
    return ChannelInfo("c", "t", None, ChannelType.TELEGRAM, None, {}, config)


@pytest.mark.parametrize(
    ("capture_all", "sample", "config", "rate"),
    [
        (False, 1.0, {}, 0.0),  # off by default
        (True, 1.0, {}, 1.0),
        (True, 0.25, {}, 0.25),
        (False, 1.0, {"capture": True}, 1.0),  # one channel on
        (True, 1.0, {"capture": False}, 0.0),  # one channel out
        (False, 1.0, {"capture": {"sample": 0.1}}, 0.1),
    ],
)
def test_sample_rate(capture_all: bool, sample: float, config: dict[str, Any], rate: float) -> None:
    settings = Settings(capture_webhooks=capture_all, capture_sample=sample)
    assert sample_rate(settings, channel(config)) == rate


def test_sampling_keeps_about_the_share_asked_for() -> None:
    from engine.ingress.capture import WebhookCapture

    random.seed(7)
    capture = WebhookCapture(None, Settings(capture_webhooks=True, capture_sample=0.2))  # type: ignore[arg-type]  # wants() needs no pool
    kept = sum(capture.wants(channel({})) for _ in range(10_000))
    assert 1800 < kept < 2200


def test_secret_headers_are_never_kept_and_outcomes_are_named() -> None:
    headers = {"Content-Type": "application/json", "X-Telegram-Bot-Api-Secret-Token": "s", "Authorization": "Bearer x",
               "Cookie": "a=b", "X-Hub-Signature-256": "sha256=00"}  # fmt: skip
    assert kept_headers(headers) == {"Content-Type": "application/json", "X-Hub-Signature-256": "sha256=00"}
    assert [outcome_of(200, [object()]), outcome_of(200, []), outcome_of(401, None), outcome_of(503, None)] == [  # type: ignore[list-item]
        "accepted", "ignored", "unauthorized", "unavailable"
    ]  # fmt: skip


@pytest.mark.parametrize("option", ["yes", {"sample": 2}, {"sample": "half"}, 3])
def test_a_bad_capture_option_is_rejected_at_load_with_its_path(option: Any) -> None:
    import json

    from engine.admin.tenant_file import BundleError, parse_bundle

    doc = {"tenant": {"slug": "t", "name": "T"},
           "channels": [{"slug": "tg", "type": "telegram", "config": {"capture": option}}]}  # fmt: skip
    with pytest.raises(BundleError, match=r"channels\[0\]\.config: .*capture: true, false or \{sample"):
        parse_bundle(json.dumps(doc), "tenant.json")
    doc["channels"][0]["config"] = {"capture": {"sample": 0.5}}  # type: ignore[index]
    assert parse_bundle(json.dumps(doc), "tenant.json").channels[0].config == {"capture": {"sample": 0.5}}
