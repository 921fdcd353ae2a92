"""Rows read by scans, from PostgreSQL's statistics: what the tests of cached plans assert on (a plan
that scans in place of finding rows by key reads more with every row the table grows by)."""

from __future__ import annotations

import asyncpg

READS = """
SELECT coalesce(sum(seq_tup_read), 0) + coalesce(sum(idx_tup_fetch), 0)
FROM pg_stat_user_tables WHERE relname LIKE $1
"""


async def rows_read(pool: asyncpg.Pool, tables: str, *others: asyncpg.Pool) -> int:
    """Rows of the tables named LIKE `tables` read so far, once the others' connections reported theirs."""
    for p in others:
        await p.execute("SELECT pg_stat_force_next_flush()")  # reported as this statement ends
    return int(await pool.fetchval(READS, tables))
