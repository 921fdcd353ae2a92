"""{{ name }} (or {{ name | fallback }}) templates and the scope they read: variables, message.*, contact.*, secret.*.

A template is split once (cached) into literal text and dotted names; rendering never raises, a
missing name renders as "". A string that is exactly one placeholder keeps its value's type when
rendered as a value (render_value), so `{"qty": "{{count}}"}` sends a number.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from functools import lru_cache
from typing import Any

import orjson

# {{ name }} or {{ name | fallback text }}: the fallback renders when the value is missing or empty.
PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z0-9_]+)*)\s*(?:\|\s*([^{}]*?)\s*)?\}\}")
Resolver = Callable[[tuple[str, ...]], Any]


@lru_cache(maxsize=8192)
def split(template: str) -> tuple[tuple[str, tuple[str, ...] | None], ...]:
    """Literal chunks (name None) and placeholders (chunk = their fallback text), in order."""
    parts: list[tuple[str, tuple[str, ...] | None]] = []
    pos = 0
    for match in PLACEHOLDER.finditer(template):
        if match.start() > pos:
            parts.append((template[pos : match.start()], None))
        parts.append((match.group(2) or "", tuple(match.group(1).split("."))))
        pos = match.end()
    if pos < len(template):
        parts.append((template[pos:], None))
    return tuple(parts)


def names(template: str) -> list[tuple[str, ...]]:
    return [path for _, path in split(template) if path is not None]


def names_in(value: Any) -> list[tuple[str, ...]]:
    """Names read by every template string inside a JSON-like value."""
    if isinstance(value, str):
        return names(value)
    if isinstance(value, dict):
        return [n for v in value.values() for n in names_in(v)]
    if isinstance(value, list):
        return [n for v in value for n in names_in(v)]
    return []


def text_of(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, dict | list):
        return orjson.dumps(value).decode()
    return str(value)


def render(template: str, resolve: Resolver, escape: Callable[[str], str] | None = None) -> str:
    out = []
    for chunk, path in split(template):
        if path is None:
            out.append(chunk)
        else:
            text = text_of(resolve(path)) or chunk
            out.append(escape(text) if escape else text)
    return "".join(out)


def render_value(value: Any, resolve: Resolver) -> Any:
    """Render every string in a JSON-like value; a lone placeholder keeps its value's type."""
    if isinstance(value, str):
        parts = split(value)
        if len(parts) == 1 and parts[0][1] is not None:
            return resolve(parts[0][1])
        return render(value, resolve)
    if isinstance(value, dict):
        return {k: render_value(v, resolve) for k, v in value.items()}
    if isinstance(value, list):
        return [render_value(v, resolve) for v in value]
    return value


def lookup(root: Any, path: tuple[str, ...]) -> Any:
    """Walk a dotted path through dicts and lists; None when any step is missing."""
    for step in path:
        if isinstance(root, dict):
            root = root.get(step)
        elif isinstance(root, list) and step.isdigit() and int(step) < len(root):
            root = root[int(step)]
        else:
            return None
    return root
