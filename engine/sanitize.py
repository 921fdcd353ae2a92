"""Values from outside made safe to store: U+0000 removed (PostgreSQL refuses it in text and jsonb),
strings capped, nesting bounded, and known secret values replaced. Pure functions, no I/O."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

MAX_DEPTH = 32
REDACTED = "***"


class TooDeep(ValueError):
    """The value nests deeper than MAX_DEPTH."""


def scrub(value: Any, limit: int, *, key_limit: int = 512, depth: int = 0) -> Any:
    """value with U+0000 removed from every string and key, strings cut at limit characters,
    non-finite floats as None; raises TooDeep past MAX_DEPTH levels of dicts and lists."""
    if isinstance(value, str):
        if "\x00" in value:
            value = value.replace("\x00", "")
        return value[:limit]
    if isinstance(value, dict | list | tuple) and depth >= MAX_DEPTH:
        raise TooDeep(f"nested deeper than {MAX_DEPTH} levels")
    if isinstance(value, dict):
        return {
            scrub(str(k), key_limit): scrub(v, limit, key_limit=key_limit, depth=depth + 1) for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return [scrub(v, limit, key_limit=key_limit, depth=depth + 1) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def redact(value: Any, secrets: Iterable[str]) -> Any:
    """value with every occurrence of each secret (in strings and keys, at any depth) replaced by ***."""
    needles = sorted({s for s in secrets if s}, key=len, reverse=True)  # longest first: no partial leftovers
    if not needles:
        return value
    return _redact(value, needles)


def _redact(value: Any, needles: list[str]) -> Any:
    if isinstance(value, str):
        for needle in needles:
            if needle in value:
                value = value.replace(needle, REDACTED)
        return value
    if isinstance(value, dict):
        return {_redact(str(k), needles): _redact(v, needles) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_redact(v, needles) for v in value]
    return value
