"""Per-run id rewriting and re-signing: fresh ids per run, duplicates stay duplicates, copies are new
people, and every request verifies with the platform's own verification code."""

from __future__ import annotations

import hashlib
import hmac
import json
import urllib.parse
from typing import Any

import orjson
import pytest
from slack_sdk.signature import SignatureVerifier

from engine.channels import get as channel_impl
from engine.channels.base import WebhookRequest
from engine.loadtest.generate import GenerateOptions, generate
from engine.loadtest.records import Record, parse_record
from engine.loadtest.rewrite import IdMap, RewriteError, rewrite
from engine.loadtest.schedule import Options, plan
from engine.loadtest.targets import Target, sign
from engine.models import ChannelInfo, ChannelType

ALL = ("telegram", "whatsapp", "messenger", "instagram", "slack")
SECRETS = {
    "telegram": {"secret_token": "tg-secret", "bot_token": "1:x"},
    "whatsapp": {"app_secret": "wa-secret"},
    "messenger": {"app_secret": "fb-secret"},
    "instagram": {"app_secret": "ig-secret"},
    "slack": {"signing_secret": "slack-secret"},
}
TARGETS = {p: Target(p, f"chan-{p}", f"EXT-{p}", SECRETS[p]) for p in ALL}


def traffic(**kw: Any) -> list[Record]:
    return list(generate(GenerateOptions(ALL, conversations=4, messages=4, buttons=0.4, statuses=1.0, **kw)))


def dedupe_ids(body: bytes, record: Record) -> list[str]:
    """The ids the engine's own parser deduplicates on (InboundEvent.event_id)."""
    channel = ChannelInfo("c", "t", "b", ChannelType(record.platform), TARGETS[record.platform].external_id, {})
    headers = {"Content-Type": record.content_type}
    events = channel_impl(ChannelType(record.platform)).parse(WebhookRequest("POST", headers, {}, body), channel)
    return [e.event_id for e in events if hasattr(e, "event_id")]


def test_every_rewritten_body_still_parses_and_ids_are_unique_per_run() -> None:
    records = traffic()
    runs = [IdMap("run1"), IdMap("run2")]
    seen: list[set[str]] = [set(), set()]
    for record in records:
        for ids, bag in zip(runs, seen, strict=True):
            new = rewrite(record, ids, 0, TARGETS[record.platform].external_id)
            for event_id in dedupe_ids(new.body, record):
                assert event_id not in bag, f"{record.platform} id {event_id} reused within a run"
                bag.add(event_id)
    assert len(seen[0]) > 50
    assert not seen[0] & seen[1]  # a second run never repeats an id of the first


def test_a_duplicate_in_the_recording_stays_a_duplicate_and_expects_no_reply() -> None:
    base = [r for r in traffic() if r.kind == "message"]
    twice = sorted([*base, *[Record(r.t + 0.001, r.platform, r.conversation, r.body) for r in base]], key=lambda r: r.t)
    items = plan(twice, TARGETS, Options())
    by_body: dict[tuple[str, str], list[int]] = {}
    for item, record in zip(items, twice, strict=True):
        ids = tuple(dedupe_ids(item.body, record))
        by_body.setdefault((item.platform, ids[0]), []).append(item.expect)
    assert len(by_body) == len(base)  # each original and its copy share the new id
    assert all(sorted(expects) == [0, 1] for expects in by_body.values())


def test_copies_are_new_people_with_new_ids() -> None:
    records = [r for r in traffic() if r.platform in ("telegram", "whatsapp", "messenger", "slack")]
    items = plan(records, TARGETS, Options(copies=3))
    assert len(items) == 3 * len(records)
    conversations: dict[str, set[str]] = {}
    for item in items:
        base = item.conversation.split("#")[0]
        if item.reply_chat is not None:  # status callbacks are answered by nobody
            conversations.setdefault(base, set()).add(item.reply_chat)
    assert all(len(chats) == 3 for chats in conversations.values())  # three distinct chats per conversation


def test_business_side_ids_become_the_targets() -> None:
    records = traffic()
    ids = IdMap()
    for record in records:
        text = rewrite(record, ids, 0, TARGETS[record.platform].external_id).body.decode()
        for placeholder in ("PHONE_NUMBER_ID", "PAGE_ID", "TEAM_ID"):
            assert placeholder not in text


def test_slack_thread_replies_stay_in_their_thread() -> None:
    parent = {"type": "event_callback", "team_id": "T1", "event_id": "Ev1",
              "event": {"type": "message", "channel": "C1", "user": "U1", "text": "a", "ts": "100.000001"}}  # fmt: skip
    child = {"type": "event_callback", "team_id": "T1", "event_id": "Ev2",
             "event": {"type": "message", "channel": "C1", "user": "U2", "text": "b", "ts": "100.000002",
                       "thread_ts": "100.000001"}}  # fmt: skip
    ids = IdMap()
    new_parent = orjson.loads(rewrite(Record(0, "slack", "C1", orjson.dumps(parent)), ids).body)
    new_child = orjson.loads(rewrite(Record(1, "slack", "C1", orjson.dumps(child)), ids).body)
    assert new_child["event"]["thread_ts"] == new_parent["event"]["ts"] != "100.000001"
    assert new_parent["event_id"] != "Ev1"


def test_a_body_of_the_wrong_shape_is_a_clear_error() -> None:
    with pytest.raises(RewriteError, match="telegram body of conversation 7"):
        rewrite(Record(0, "telegram", "7", b'{"message": {}}'), IdMap())
    with pytest.raises(ValueError, match=r"line 3\.platform"):
        parse_record(b'{"t": 0, "platform": "fax", "conversation": "1", "body": "{}"}', 3)


# --- re-signing, checked with each platform's own verification --------------------------------------


def test_slack_requests_verify_with_slack_sdk() -> None:
    verifier = SignatureVerifier("slack-secret")
    for record in (r for r in traffic() if r.platform == "slack"):
        body = rewrite(record, IdMap(), 0, "T9").body
        now = 1_800_000_000.0
        headers = sign(TARGETS["slack"], body, record.content_type, now)
        assert verifier.is_valid(body, headers["X-Slack-Request-Timestamp"], headers["X-Slack-Signature"]) is False
        verifier_now = SignatureVerifier("slack-secret", clock=_Clock(now))
        assert verifier_now.is_valid(body, headers["X-Slack-Request-Timestamp"], headers["X-Slack-Signature"])
        assert not verifier_now.is_valid(
            body + b" ", headers["X-Slack-Request-Timestamp"], headers["X-Slack-Signature"]
        )


class _Clock:
    def __init__(self, now: float) -> None:
        self._now = now

    def now(self) -> float:
        return self._now


def test_meta_requests_carry_the_app_secret_hmac_of_the_exact_body() -> None:
    for platform in ("whatsapp", "messenger", "instagram"):
        for record in (r for r in traffic() if r.platform == platform):
            body = rewrite(record, IdMap(), 0, "EXT").body
            given = sign(TARGETS[platform], body, "application/json", 0)["X-Hub-Signature-256"]
            expected = "sha256=" + hmac.new(SECRETS[platform]["app_secret"].encode(), body, hashlib.sha256).hexdigest()
            assert hmac.compare_digest(given, expected)
            json.loads(body)  # still the platform's JSON


def test_telegram_requests_carry_the_secret_token_header() -> None:
    record = next(r for r in traffic() if r.platform == "telegram")
    headers = sign(TARGETS["telegram"], rewrite(record, IdMap()).body, "application/json", 0)
    assert headers["X-Telegram-Bot-Api-Secret-Token"] == "tg-secret"


def test_the_engine_accepts_every_re_signed_request() -> None:
    """The engine's own verify() (the receiver's check) takes each re-signed request."""
    import time

    for record in traffic():
        target = TARGETS[record.platform]
        body = rewrite(record, IdMap(), 0, target.external_id).body
        headers = sign(target, body, record.content_type, time.time())
        channel = ChannelInfo(target.channel_id, "t", "b", ChannelType(record.platform), target.external_id,
                              dict(target.secrets))  # fmt: skip
        impl = channel_impl(ChannelType(record.platform))
        impl.verify(WebhookRequest("POST", headers, {}, body), channel)
        if record.content_type.startswith("application/x-www-form"):
            assert urllib.parse.parse_qs(body.decode())["payload"]
