"""Last-touch attribution: an order is credited to the last recovery message sent to the contact
within that message's campaign's attribution window, once.

The credited message becomes converted and its event recovered with the order's value (not the
cart's). Other open events of the contact that began before the order are converted without credit
(their remaining steps stop at claim time). An order with no message in any window is
`unattributed`: an ordinary order is never counted as recovered.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import asyncpg

from engine.recovery.campaigns import EventStatus
from engine.store import recovery as sql

if TYPE_CHECKING:
    from engine.recovery.intake import NewEvent


async def credit_order(
    conn: asyncpg.Connection, tenant_id: str, order_id: str, contact_id: str | None, order: NewEvent
) -> str | None:
    """Credit the order (already stored as order_id); returns the credited recovery message id."""
    credited = None
    if contact_id is not None:
        credited = await conn.fetchval(
            sql.ATTRIBUTE_ORDER, tenant_id, contact_id, order.occurred_at, order.value, order_id
        )
        await conn.execute(sql.CONVERT_OPEN_EVENTS, tenant_id, contact_id, order.occurred_at)
    status = EventStatus.ATTRIBUTED if credited else EventStatus.UNATTRIBUTED
    await conn.execute(sql.SET_EVENT_STATUS, order_id, status.value, EventStatus.RECEIVED.value)
    return str(credited) if credited else None
