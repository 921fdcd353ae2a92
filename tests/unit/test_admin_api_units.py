"""Pure pieces of the admin API: token format and arguments, the per-token rate limiter, cursors,
the reply target derived from a conversation key."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from engine.admin import tokens
from engine.admin.api.auth import RateLimiter
from engine.admin.api.conversations import _fallback_target
from engine.admin.api.models import decode_cursor, encode_cursor
from engine.admin.api.routing import ApiError, problems


def test_tokens_are_prefixed_random_and_hashed() -> None:
    a, b = tokens.generate(), tokens.generate()
    assert a != b
    assert a.startswith("eng_") and len(a) == 47  # 32 random bytes, base64url
    assert tokens.digest(a) != tokens.digest(b) and len(tokens.digest(a)) == 32


def test_scopes_and_expiry_arguments() -> None:
    assert tokens.parse_scopes("read, write,read") == ("read", "write")
    for bad in ("", "admin", "read,root"):
        with pytest.raises(tokens.TokenError):
            tokens.parse_scopes(bad)
    now = datetime(2026, 1, 1, tzinfo=UTC)
    assert tokens.parse_expiry("30d", now) == now + timedelta(days=30)
    assert tokens.parse_expiry("90m", now) == now + timedelta(minutes=90)
    assert tokens.parse_expiry("2027-01-01", now) == datetime(2027, 1, 1, tzinfo=UTC)
    assert tokens.parse_expiry(None) is None
    with pytest.raises(tokens.TokenError):
        tokens.parse_expiry("soon", now)


def test_rate_limiter_is_a_bucket_per_token() -> None:
    limiter = RateLimiter(rate=2.0, burst=3)
    assert [limiter.take("t", now=0.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert limiter.take("t", now=0.0) == pytest.approx(0.5)
    assert limiter.take("other", now=0.0) == 0.0
    assert limiter.take("t", now=1.0) == 0.0  # refilled at 2 per second


def test_cursors_round_trip_and_reject_garbage() -> None:
    at = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
    row = "6f1c2b0e-4a8d-4f47-9a53-2f8d0f3c9b10"
    assert decode_cursor(encode_cursor(at, row)) == (at, row)
    assert decode_cursor(None) is None
    with pytest.raises(ApiError) as err:
        decode_cursor("not-a-cursor")
    assert err.value.status == 422


def test_problem_lines_become_path_and_message() -> None:
    err = problems(["flows[0].nodes[ask].next: no node 'x'", "plain"])
    assert (err.status, err.errors) == (422, [
        {"path": "flows[0].nodes[ask].next", "message": "no node 'x'"}, {"path": "", "message": "plain"},
    ])  # fmt: skip


def test_reply_target_from_a_conversation_key() -> None:
    assert _fallback_target("telegram", "-100123:7") == {"chat_id": -100123, "message_thread_id": 7}
    assert _fallback_target("slack", "C1:171.5") == {"channel": "C1", "thread_ts": "171.5"}
    assert _fallback_target("whatsapp", "4915") == {}
