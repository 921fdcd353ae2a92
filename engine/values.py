"""Value helpers every layer shares: epoch seconds as UTC datetimes, and JSON text (orjson).

JSON travels to PostgreSQL as text (jsonb arrays as text[] cast in SQL: asyncpg cannot encode jsonb[]
elements through a text-format codec), and encoding at staging time also freezes the value.
"""

from __future__ import annotations

from datetime import UTC, datetime

import orjson


def utc(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, UTC)


def json_text(value: object) -> str:
    return orjson.dumps(value).decode()
