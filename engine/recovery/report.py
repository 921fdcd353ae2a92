"""`engine recovery report`: the funnel per campaign, from recovery_analytics (refreshed first).

events -> scheduled -> sent -> delivered -> read -> replied -> converted, the skips by reason, the
revenue at risk (the events' values) and recovered (the credited orders' values), and the
conversion rate (events converted by a message / events).
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any

import asyncpg

from engine.store import recovery as sql

FUNNEL = ("events", "scheduled", "sent", "delivered", "read", "replied", "converted")


async def funnel(pool: asyncpg.Pool, tenant: str, campaign: str | None, since: date) -> list[dict[str, Any]] | None:
    """Refresh the tenant's analytics since `since` and return one dict per campaign; None if no such tenant."""
    tenant_id = await pool.fetchval(sql.SELECT_TENANT_ID, tenant)
    if tenant_id is None:
        return None
    start = datetime(since.year, since.month, since.day, tzinfo=UTC)
    await pool.execute(sql.REFRESH_ANALYTICS, tenant_id, start)
    return [dict(r) for r in await pool.fetch(sql.SELECT_FUNNEL, tenant_id, since, campaign)]


def format_funnel(rows: list[dict[str, Any]]) -> list[str]:
    lines = []
    for r in rows:
        lines.append(f"campaign {r['slug']} ({r['name']})")
        lines.append("  " + "  ".join(f"{k} {r[k]}" for k in FUNNEL))
        rate = r["converted"] / r["events"] if r["events"] else 0.0
        lines.append(
            f"  revenue at risk {r['revenue_at_risk']:.2f}  recovered {r['revenue_recovered']:.2f}"
            f"  conversion rate {rate:.1%}"
        )
        skipped = r["skipped"] or {}
        if skipped:
            lines.append("  skipped/failed: " + ", ".join(f"{k} {v}" for k, v in sorted(skipped.items())))
    return lines or ["no recovery activity in that period"]


def parse_since(value: str | None) -> date:
    """YYYY-MM-DD, or Nd for N days ago (default 30d)."""
    if not value:
        return (datetime.now(UTC) - timedelta(days=30)).date()
    if value.endswith("d") and value[:-1].isdigit():
        return (datetime.now(UTC) - timedelta(days=int(value[:-1]))).date()
    return date.fromisoformat(value)
