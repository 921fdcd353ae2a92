"""What every saved definition (tenant file, rules, flows, tools) validates the same way: strict
models (an unknown field is an error that names its path), regexes that RE2 compiles, known time zones."""

from __future__ import annotations

from typing import Annotated
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import AfterValidator, BaseModel, ConfigDict

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
