"""Compiled conditions and actions: frozen slotted dataclasses with a test() on a Message.

Built once per definition load by the compiler; evaluated per message with no allocation beyond
what a set lookup or a regex search needs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from engine.brain.routing.message import LocalClock, Message
from engine.brain.routing.text import bucket
from engine.models import Button
from engine.patterns import Pattern


class Cond(Protocol):
    def test(self, m: Message) -> bool: ...


@dataclass(frozen=True, slots=True)
class Const:
    value: bool

    def test(self, m: Message) -> bool:
        return self.value


TRUE = Const(True)
FALSE = Const(False)


@dataclass(frozen=True, slots=True)
class All:
    items: tuple[Cond, ...]

    def test(self, m: Message) -> bool:
        for item in self.items:  # noqa: SIM110 - a loop, not all(genexpr): runs per candidate per message
            if not item.test(m):
                return False
        return True


@dataclass(frozen=True, slots=True)
class AnyOf:
    items: tuple[Cond, ...]

    def test(self, m: Message) -> bool:
        for item in self.items:  # noqa: SIM110
            if item.test(m):
                return True
        return False


@dataclass(frozen=True, slots=True)
class Not:
    item: Cond

    def test(self, m: Message) -> bool:
        return not self.item.test(m)


@dataclass(frozen=True, slots=True)
class Channel:
    ids: frozenset[str]
    types: frozenset[str]

    def test(self, m: Message) -> bool:
        return m.channel_id in self.ids or m.channel_type in self.types


@dataclass(frozen=True, slots=True)
class MessageTypeIn:
    types: frozenset[str]

    def test(self, m: Message) -> bool:
        return m.type in self.types


@dataclass(frozen=True, slots=True)
class Contains:
    words: frozenset[str]  # single-word keywords
    phrases: tuple[str, ...]  # multi-word keywords, as " w1 w2 "

    def test(self, m: Message) -> bool:
        if not self.words.isdisjoint(m.words):
            return True
        return any(p in m.spaced for p in self.phrases)


@dataclass(frozen=True, slots=True)
class StartsWith:
    prefixes: tuple[str, ...]  # " w1 w2 "

    def test(self, m: Message) -> bool:
        return any(m.spaced.startswith(p) for p in self.prefixes)


@dataclass(frozen=True, slots=True)
class Equals:
    values: frozenset[str]  # " w1 w2 "

    def test(self, m: Message) -> bool:
        return m.spaced in self.values


@dataclass(frozen=True, slots=True)
class Regex:
    pattern: Pattern  # RE2: linear in the (capped) text

    def test(self, m: Message) -> bool:
        return self.pattern.search(m.text)


@dataclass(frozen=True, slots=True)
class Payload:
    values: frozenset[str]

    def test(self, m: Message) -> bool:
        return m.payload in self.values


_MISSING = object()


@dataclass(frozen=True, slots=True)
class AttrEquals:
    name: str
    value: Any

    def test(self, m: Message) -> bool:
        found = m.attributes.get(self.name, _MISSING)
        return found is not _MISSING and found == self.value


@dataclass(frozen=True, slots=True)
class AttrIn:
    name: str
    values: tuple[Any, ...]

    def test(self, m: Message) -> bool:
        found = m.attributes.get(self.name, _MISSING)
        return found is not _MISSING and found in self.values


@dataclass(frozen=True, slots=True)
class AttrExists:
    name: str
    exists: bool

    def test(self, m: Message) -> bool:
        return (m.attributes.get(self.name) is not None) is self.exists


@dataclass(frozen=True, slots=True)
class IsNew:
    value: bool

    def test(self, m: Message) -> bool:
        return m.is_new is self.value


@dataclass(frozen=True, slots=True)
class StatusIn:
    statuses: frozenset[str]

    def test(self, m: Message) -> bool:
        return m.status in self.statuses


@dataclass(frozen=True, slots=True)
class Window:
    clock: LocalClock
    days: frozenset[int]  # 0 = Monday
    start: int  # minute of day, inclusive
    end: int  # minute of day, exclusive; end <= start runs past midnight

    def test(self, m: Message) -> bool:
        return in_window(self.clock.at(m.timestamp), self.days, self.start, self.end)


def in_window(now: tuple[int, int], days: frozenset[int], start: int, end: int) -> bool:
    day, minute = now
    if start < end:
        return day in days and start <= minute < end
    # Overnight (22:00-06:00): the part after midnight belongs to the day the window opened.
    return (day in days and minute >= start) or ((day - 1) % 7 in days and minute < end)


@dataclass(frozen=True, slots=True)
class SplitBucket:
    salt: str
    low: float  # in buckets of 0.01 %: [offset * 100, (offset + percent) * 100)
    high: float

    def test(self, m: Message) -> bool:
        return self.low <= bucket(self.salt, m.contact_id) < self.high


# --- actions ------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StartFlowAction:
    bot_id: str
    flow_slug: str
    node: str | None = None


@dataclass(frozen=True, slots=True)
class HandoffAction:
    queue: str
    text: str | None = None


@dataclass(frozen=True, slots=True)
class ReplyTemplate:
    text: str
    buttons: tuple[Button, ...] = ()


@dataclass(frozen=True, slots=True)
class TagAction:
    tags: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class SetAttributes:
    values: tuple[tuple[str, Any], ...]


@dataclass(frozen=True, slots=True)
class DropAction:
    pass


RouteAction = StartFlowAction | HandoffAction | ReplyTemplate | TagAction | SetAttributes | DropAction
# Actions after which the conversation's flow (or the bot's default flow) does not run.
TERMINAL = (StartFlowAction, HandoffAction, ReplyTemplate, DropAction)


@dataclass(frozen=True, slots=True)
class Decision:
    rules: tuple[str, ...]  # names of the matched rules, in order
    actions: tuple[RouteAction, ...]

    @property
    def terminal(self) -> bool:
        return any(isinstance(a, TERMINAL) for a in self.actions)


NO_MATCH = Decision((), ())
