"""Encrypted columns, for `engine rotate-key`: read every token and write it back re-encrypted."""

from __future__ import annotations

from collections.abc import Callable

import asyncpg

SELECT_CHANNEL_CREDENTIALS = "SELECT id, credentials FROM channels WHERE credentials IS NOT NULL FOR UPDATE"
UPDATE_CHANNEL_CREDENTIALS = "UPDATE channels SET credentials = $2, updated_at = now() WHERE id = $1"


async def reencrypt(conn: asyncpg.Connection, rotate: Callable[[bytes], bytes]) -> int:
    """Re-encrypt every channel's credentials with rotate(); returns the rows rewritten. Run it in a
    transaction (the rows are locked until it commits)."""
    rows = await conn.fetch(SELECT_CHANNEL_CREDENTIALS)
    for row in rows:
        await conn.execute(UPDATE_CHANNEL_CREDENTIALS, row["id"], rotate(row["credentials"]))
    return len(rows)
