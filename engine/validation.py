"""What every saved definition (tenant file, rules, flows, tools) validates the same way: strict
models (an unknown field is an error that names its path), regexes that RE2 compiles, known time zones."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import AfterValidator, BaseModel, ConfigDict, ValidationError

from engine import patterns


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


def _compiles(value: str) -> str:
    # Tenant patterns run on RE2 (engine.patterns): what RE2 refuses is refused here, at save time.
    return patterns.check(value)


def _known_zone(value: str) -> str:
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {value!r}") from None
    return value


RegexPattern = Annotated[str, AfterValidator(_compiles)]
TimeZone = Annotated[str, AfterValidator(_known_zone)]


def loc_path(loc: tuple[Any, ...]) -> str:
    """pydantic's error location as a path: `campaigns[0].steps[1].template`."""
    return "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in loc).lstrip(".")


def problem_lines(exc: ValidationError, path: Callable[[tuple[Any, ...]], str] = loc_path) -> list[str]:
    """Each error as `path: message`, the lines `engine load` prints and the API answers 422 with."""
    return [f"{path(e['loc'])}: {e['msg'].removeprefix('Value error, ')}" for e in exc.errors()]
