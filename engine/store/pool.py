"""The asyncpg pool: jsonb/json codecs backed by orjson, set once per connection."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

import asyncpg
import orjson
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, wait_exponential_jitter

from engine.values import json_text

log = logging.getLogger(__name__)
T = TypeVar("T")

# What a database restart, a failover or an overload looks like: retry the same work later. Anything
# else the database raises is about the data itself, and retrying it would fail the same way.
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    OSError,  # refused, reset, timed out
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,  # e.g. the connection was closed under us
    asyncpg.exceptions.InternalClientError,  # a connection left mid-operation by a broken socket
    asyncpg.exceptions.OperatorInterventionError,  # shutting down, starting up
    asyncpg.exceptions.InsufficientResourcesError,  # too many connections
    asyncpg.exceptions.TransactionRollbackError,  # serialization failure, deadlock
)


def is_transient(exc: BaseException) -> bool:
    return isinstance(exc, TRANSIENT_ERRORS)


def while_away(stopping: Callable[[], bool] = lambda: False) -> AsyncRetrying:
    """A retry policy for work that failed because the database is away: again, backing off up to 5 s,
    for as long as it is away (or until stopping() says to give up). Cancel the caller to stop it."""
    return AsyncRetrying(
        retry=retry_if_exception(lambda exc: is_transient(exc) and not stopping()),
        wait=wait_exponential_jitter(multiplier=0.1, max=5),
        before_sleep=_log_outage,
        reraise=True,
    )


async def when_available(operation: Callable[[], Awaitable[T]]) -> T:
    """operation(), retried with while_away() until the database answers."""
    # The first try runs bare: a retry policy object per call was ~10 % of a worker's CPU, and the
    # database is almost always there. Only a transient failure enters the policy (from its start).
    try:
        return await operation()
    except TRANSIENT_ERRORS as exc:
        log.warning("database unavailable (%s); retrying", type(exc).__name__)
    async for attempt in while_away():
        with attempt:
            return await operation()
    raise AssertionError("unreachable: while_away() reraises")


def _log_outage(state: RetryCallState) -> None:
    error = state.outcome.exception() if state.outcome else None
    log.warning("database unavailable (%s); attempt %d, retrying", type(error).__name__, state.attempt_number)


async def _init_connection(conn: asyncpg.Connection) -> None:
    for name in ("jsonb", "json"):
        await conn.set_type_codec(name, encoder=json_text, decoder=orjson.loads, schema="pg_catalog", format="text")


async def _keep_session(conn: asyncpg.Connection) -> None:
    """No reset query on release (asyncpg still rolls back an open transaction first)."""


# Plan each execution of a cached statement for the table as it is now. A generic plan made while a
# table was empty (a new deployment, a new month's partition) stays cached for the connection's life
# and can scan the whole table (or the whole partial index of pending replies) per statement once it
# has grown; with stale statistics (autovacuum behind, or off) that cost grows with every row written.
CUSTOM_PLANS = {"plan_cache_mode": "force_custom_plan"}
# For a pool whose every statement finds its rows by key (a join of unnest() of the keys to the index
# that holds them): plan once per connection, and only with index lookups, so that the plan cannot
# depend on how big the tables were when it was made. Planning at every execution cost the sender's
# claims and records more than executing them, and the worker's inserts a sixth of their cost
# (pg_stat_statements; docs/performance.md). A statement run here must not let a partial index stand
# in for its key (see deliveries.CLAIM_MANY); one that can read a table other than by key runs after
# plan_per_call().
KEYED_PLANS = {
    "plan_cache_mode": "force_generic_plan",
    "enable_seqscan": "off",
    "enable_hashjoin": "off",
    "enable_mergejoin": "off",
}


async def plan_per_call(conn: asyncpg.Connection) -> None:
    """Inside a transaction on a keyed connection, before a statement whose best plan depends on its
    arguments or the size of its tables: every statement until the commit is planned for its call."""
    await conn.execute("SET LOCAL plan_cache_mode = force_custom_plan")


async def create_pool(
    dsn: str, *, min_size: int = 1, max_size: int = 10, reset: bool = True, keyed: bool = False
) -> asyncpg.Pool:
    """reset=False: the pool's users never leave session state behind (no SET, LISTEN or advisory lock;
    those take connections of their own), so a release skips asyncpg's reset query, a round trip and a
    statement per release (~8 % of a sender's CPU, and PostgreSQL's work with it).
    keyed=True: KEYED_PLANS instead of CUSTOM_PLANS; read them before running anything else there."""
    pool = await asyncpg.create_pool(
        dsn,
        min_size=min_size,
        max_size=max_size,
        init=_init_connection,
        command_timeout=60,
        reset=None if reset else _keep_session,
        server_settings=KEYED_PLANS if keyed else CUSTOM_PLANS,
    )
    assert pool is not None
    return pool


async def ping(pool: asyncpg.Pool) -> None:
    """Raise unless the database answers (readiness checks)."""
    await pool.fetchval("SELECT 1")
