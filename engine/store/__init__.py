"""Raw asyncpg SQL, one module per concern; callers own the transaction."""

from __future__ import annotations

from collections.abc import Sequence


def columns(rows: Sequence[tuple[object, ...]], width: int) -> list[list[object]]:
    """Rows to the per-column lists that unnest() takes: how every batch statement is fed."""
    return [list(col) for col in zip(*rows, strict=True)] if rows else [[] for _ in range(width)]
