"""`engine migrate`: create the database if needed, then apply sql/NNNN_*.sql in order.

Each file runs in its own transaction and is recorded in schema_migrations; a session advisory lock
serialises concurrent runs (two deploys, two replicas), so running it twice or at once is safe.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg

log = logging.getLogger(__name__)

SQL_DIR = Path(__file__).resolve().parents[2] / "sql"
MIGRATION_LOCK = 7_305_001  # arbitrary, fixed: the advisory lock key of `engine migrate`
MONTHS_AHEAD = 3

CREATE_MIGRATIONS_TABLE = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version     text PRIMARY KEY,
    applied_at  timestamptz NOT NULL DEFAULT now()
)
"""
SELECT_APPLIED = "SELECT version FROM schema_migrations"
INSERT_APPLIED = "INSERT INTO schema_migrations (version) VALUES ($1)"
ENSURE_PARTITIONS = "SELECT ensure_month_partitions($1)"
DB_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_\-]{0,62}$")


def migration_files(sql_dir: Path = SQL_DIR) -> list[Path]:
    files = sorted(sql_dir.glob("[0-9][0-9][0-9][0-9]_*.sql"))
    versions = [f.name[:4] for f in files]
    if len(set(versions)) != len(versions):
        raise RuntimeError(f"two migrations share a number in {sql_dir}: {versions}")
    return files


async def create_database(dsn: str) -> bool:
    """Create the DSN's database unless it exists; True if this call created it."""
    parts = urlsplit(dsn)
    name = parts.path.lstrip("/")
    if not DB_NAME.match(name):
        raise ValueError(f"refusing to create a database with the name {name!r}")
    try:
        conn = await asyncpg.connect(dsn)
    except asyncpg.InvalidCatalogNameError:
        pass
    else:
        await conn.close()
        return False
    admin = await asyncpg.connect(urlunsplit(parts._replace(path="/postgres")))
    try:
        # An identifier cannot be a parameter; the name was checked against DB_NAME above.
        await admin.execute(f'CREATE DATABASE "{name}"')
        log.info("created database %s", name)
        return True
    except (asyncpg.DuplicateDatabaseError, asyncpg.UniqueViolationError):
        return False  # a concurrent `engine migrate` created it first (the race shows as either)
    finally:
        await admin.close()


async def migrate(dsn: str, sql_dir: Path = SQL_DIR) -> list[str]:
    """Apply pending migrations; returns the file names applied by this call."""
    await create_database(dsn)
    conn = await asyncpg.connect(dsn)
    applied_now: list[str] = []
    try:
        await conn.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK)
        try:
            await conn.execute(CREATE_MIGRATIONS_TABLE)
            done = {r["version"] for r in await conn.fetch(SELECT_APPLIED)}
            for path in migration_files(sql_dir):
                if path.name in done:
                    continue
                async with conn.transaction():
                    await conn.execute(path.read_text())
                    await conn.execute(INSERT_APPLIED, path.name)
                applied_now.append(path.name)
                log.info("applied migration %s", path.name)
            await conn.execute(ENSURE_PARTITIONS, MONTHS_AHEAD)
        finally:
            await conn.execute("SELECT pg_advisory_unlock($1)", MIGRATION_LOCK)
    finally:
        await conn.close()
    return applied_now
