"""Tenant- and user-supplied regular expressions, on RE2 (linear time in the input, no backtracking).

Every pattern a tenant writes (routing `regex`, ask validation `regex`, `matches` in expressions) or
an end user can put in a variable is compiled here. RE2 refuses what it cannot run in linear time
(back-references, look-around); such a pattern is an error at save time, with the field's path. Input
is capped at MAX_INPUT characters, so a search costs at most O(pattern x MAX_INPUT).

RE2's \\w, \\d, \\s and \\b are ASCII; (?i) folds Unicode case (k also matches U+212A).
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import re2  # no type stubs: pyproject's mypy overrides ignore its imports

MAX_PATTERN = 2000  # characters of one pattern
MAX_INPUT = 8192  # characters of text a pattern is run on (the rest is not looked at)
MAX_PROGRAM_BYTES = 2 << 20  # RE2's memory budget per compiled pattern


class PatternError(ValueError):
    """The pattern is not one RE2 runs (or is too long); the message says why."""


def _options() -> Any:
    options = re2.Options()
    options.log_errors = False  # the error is raised to the caller, not printed on stderr
    options.max_mem = MAX_PROGRAM_BYTES
    return options


_OPTIONS = _options()


def _compile(pattern: str) -> Any:
    if len(pattern) > MAX_PATTERN:
        raise PatternError(f"pattern longer than {MAX_PATTERN} characters")
    try:
        return re2.compile(pattern, _OPTIONS)
    except re2.error as exc:
        reason = exc.args[0].decode(errors="replace") if exc.args and isinstance(exc.args[0], bytes) else str(exc)
        raise PatternError(f"invalid regex {pattern[:100]!r}: {reason}") from None


@lru_cache(maxsize=1024)
def compile_pattern(pattern: str) -> Pattern:
    """The compiled pattern (cached per distinct source); raises PatternError."""
    return Pattern(pattern, _compile(pattern))


class Pattern:
    """A compiled RE2 pattern with capped search / fullmatch."""

    __slots__ = ("_regexp", "pattern")

    def __init__(self, pattern: str, regexp: Any) -> None:
        self.pattern = pattern
        self._regexp = regexp

    def search(self, text: str) -> bool:
        return self._regexp.search(text[:MAX_INPUT]) is not None

    def fullmatch(self, text: str) -> bool:
        return len(text) <= MAX_INPUT and self._regexp.fullmatch(text) is not None

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Pattern) and other.pattern == self.pattern

    def __hash__(self) -> int:
        return hash(self.pattern)

    def __repr__(self) -> str:
        return f"Pattern({self.pattern!r})"


def check(pattern: str) -> str:
    """The pattern itself if RE2 compiles it; raises PatternError (a ValueError) otherwise."""
    compile_pattern(pattern)
    return pattern
