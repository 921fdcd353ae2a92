"""Routing rule definitions as saved (pydantic, at the edge): conditions, actions, rules.

A condition or an action is an object with exactly one key, so a YAML file reads naturally
(`- contains: [agent, human]`) and a validation error names the path of the bad field
(`rules[3].conditions.all[1].regex: invalid regex ...`).
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, Field, field_validator, model_validator

from engine.models import ChannelType, MessageType
from engine.validation import RegexPattern, Strict, TimeZone

Day = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
DAYS: tuple[Day, ...] = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
HHMM = re.compile(r"^([01]\d|2[0-4]):([0-5]\d)$")


def _one_of(model: BaseModel, kind: str) -> None:
    """Exactly one key must be set: the key is the condition's (or action's) kind."""
    given = [name for name in type(model).model_fields if getattr(model, name) is not None]
    if len(given) != 1:
        keys = ", ".join(f.alias or n for n, f in type(model).model_fields.items())
        raise ValueError(f"a {kind} needs exactly one of: {keys}")


def _listify(value: Any) -> Any:
    return [value] if isinstance(value, str | int | float | bool) else value


class AttributeCondition(Strict):
    name: str = Field(min_length=1)
    equals: Any = None
    in_: list[Any] | None = Field(default=None, alias="in")
    exists: bool | None = None

    @model_validator(mode="after")
    def _one_test(self) -> AttributeCondition:
        tests = [t for t in ("equals", "in_", "exists") if getattr(self, t) is not None]
        if len(tests) != 1:
            raise ValueError("an attribute condition needs exactly one of: equals, in, exists")
        return self


class TimeWindow(Strict):
    days: list[Day] = list(DAYS)
    start: str = "00:00"
    end: str = "24:00"  # exclusive; end <= start means the window runs past midnight
    timezone: TimeZone | None = None  # default: the tenant's time zone

    @field_validator("start", "end")
    @classmethod
    def _hhmm(cls, value: str) -> str:
        match = HHMM.match(value)
        if match is None or (match.group(1) == "24" and match.group(2) != "00"):
            raise ValueError(f"expected HH:MM, got {value!r}")
        return value


class Split(Strict):
    """Sticky per contact: a contact falls in [offset, offset + percent) of 100 buckets, always."""

    percent: float = Field(gt=0, le=100)
    offset: float = Field(default=0, ge=0, lt=100)
    salt: str = ""


class Condition(Strict):
    all: list[Condition] | None = None
    any: list[Condition] | None = None
    not_: Condition | None = Field(default=None, alias="not")
    channel_type: list[ChannelType] | None = None
    channel: list[str] | None = None  # channel ids or slugs
    message_type: list[MessageType] | None = None
    contains: list[str] | None = None  # any of these words or phrases, whole words
    starts_with: list[str] | None = None  # the message's first words
    equals: list[str] | None = None  # the message's words, exactly
    regex: RegexPattern | None = None  # RE2 search on the raw text (engine.patterns)
    payload: list[str] | None = None  # button / postback payload
    attribute: AttributeCondition | None = None  # contact attribute
    new_conversation: bool | None = None
    status: list[Literal["bot", "human", "closed"]] | None = None
    time: TimeWindow | None = None
    split: Split | None = None

    _lists = field_validator(
        "channel_type",
        "channel",
        "message_type",
        "contains",
        "starts_with",
        "equals",
        "payload",
        "status",
        mode="before",
    )(_listify)

    @field_validator("contains", "starts_with", "equals")
    @classmethod
    def _has_words(cls, values: list[str]) -> list[str]:
        from engine.brain.routing.text import phrase

        for value in values:
            if not phrase(value):
                raise ValueError(f"{value!r} has no words to match")
        return values

    @model_validator(mode="after")
    def _exactly_one(self) -> Condition:
        _one_of(self, "condition")
        return self


class StartFlow(Strict):
    bot: str  # bot slug or id
    flow: str  # flow slug
    node: str | None = None


class Handoff(Strict):
    queue: str = "default"
    text: str | None = None  # template sent to the contact


class ButtonDef(Strict):
    id: str = Field(min_length=1)
    title: str = Field(min_length=1)


class ReplyAction(Strict):
    text: str = Field(min_length=1)  # template: {{contact.name}}, {{message.text}}, variables
    buttons: list[ButtonDef] = []


class Action(Strict):
    start_flow: StartFlow | None = None
    handoff: Handoff | None = None
    reply: ReplyAction | None = None
    tag: list[str] | None = None
    set_attributes: dict[str, Any] | None = None
    drop: Literal[True] | None = None
    continue_: Literal[True] | None = Field(default=None, alias="continue")

    _tags = field_validator("tag", mode="before")(_listify)

    @model_validator(mode="before")
    @classmethod
    def _bare_words(cls, value: Any) -> Any:
        # `- drop`, `- continue`, `- handoff` read better than `- drop: true`.
        if value in ("drop", "continue"):
            return {value: True}
        if value == "handoff":
            return {"handoff": {}}
        return value

    @model_validator(mode="after")
    def _exactly_one(self) -> Action:
        _one_of(self, "action")
        return self


class Rule(Strict):
    name: str = Field(min_length=1, max_length=200)
    priority: int = 100  # smaller runs first; ties by name
    status: Literal["active", "disabled"] = "active"
    conditions: Condition | None = None  # none: always matches
    actions: list[Action] = Field(min_length=1)

    @property
    def continues(self) -> bool:
        return any(a.continue_ for a in self.actions)


Condition.model_rebuild()
