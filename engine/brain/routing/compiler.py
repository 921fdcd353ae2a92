"""Compile a tenant's rules into indexed matchers: one per channel, rules in priority order.

Each rule gets an index key from one of its required conditions (a keyword, a payload, an exact
text, an attribute value, a word its regex cannot match without, ...). A message looks up only its
own keys and tests just those candidates, plus the few rules that have no key (a bare time window,
a split). Channel conditions are decided when a channel's matcher is built, not per message.
Plain functions and frozen dataclasses: no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from engine.brain.routing import compiled as c
from engine.brain.routing.message import clock
from engine.brain.routing.rule_models import DAYS, Action, Condition
from engine.brain.routing.text import phrase
from engine.models import Button
from engine.patterns import compile_pattern

Key = tuple[str, Any]
# Most selective first: an index key from a more selective kind wins.
KIND_RANK = {"equals": 0, "payload": 1, "word": 2, "rxword": 3, "first": 4, "attr": 5, "exists": 6,
             "new": 7, "type": 8, "status": 9}  # fmt: skip


@dataclass(frozen=True, slots=True)
class CompiledRule:
    position: int  # in priority order
    name: str
    cond: c.Cond
    actions: tuple[c.RouteAction, ...]
    continues: bool


@dataclass(frozen=True, slots=True)
class Names:
    """How definitions name things in this tenant: slugs or ids of bots and channels."""

    timezone: str = "UTC"
    bots: dict[str, str] = field(default_factory=dict)  # slug -> id (ids map to themselves too)
    channels: dict[str, str] = field(default_factory=dict)  # slug -> id


def minutes(hhmm: str) -> int:
    hours, mins = hhmm.split(":")
    return int(hours) * 60 + int(mins)


def compile_condition(cond: Condition | None, names: Names) -> c.Cond:  # noqa: C901 - one branch per kind
    if cond is None:
        return c.TRUE
    if cond.all is not None:
        return c.All(tuple(compile_condition(x, names) for x in cond.all))
    if cond.any is not None:
        return c.AnyOf(tuple(compile_condition(x, names) for x in cond.any))
    if cond.not_ is not None:
        return c.Not(compile_condition(cond.not_, names))
    if cond.channel_type is not None:
        return c.Channel(frozenset(), frozenset(t.value for t in cond.channel_type))
    if cond.channel is not None:
        return c.Channel(frozenset(names.channels.get(x, x) for x in cond.channel), frozenset())
    if cond.message_type is not None:
        return c.MessageTypeIn(frozenset(t.value for t in cond.message_type))
    if cond.contains is not None:
        phrases = [phrase(k) for k in cond.contains]
        return c.Contains(frozenset(p for p in phrases if " " not in p), tuple(f" {p} " for p in phrases if " " in p))
    if cond.starts_with is not None:
        return c.StartsWith(tuple(f" {phrase(p)} " for p in cond.starts_with))
    if cond.equals is not None:
        return c.Equals(frozenset(f" {phrase(p)} " for p in cond.equals))
    if cond.regex is not None:
        return c.Regex(compile_pattern(cond.regex))
    if cond.payload is not None:
        return c.Payload(frozenset(cond.payload))
    if cond.attribute is not None:
        a = cond.attribute
        if a.exists is not None:
            return c.AttrExists(a.name, a.exists)
        if a.in_ is not None:
            return c.AttrIn(a.name, tuple(a.in_))
        return c.AttrEquals(a.name, a.equals)
    if cond.new_conversation is not None:
        return c.IsNew(cond.new_conversation)
    if cond.status is not None:
        return c.StatusIn(frozenset(cond.status))
    if cond.time is not None:
        t = cond.time
        days = frozenset(DAYS.index(d) for d in t.days)
        return c.Window(clock(t.timezone or names.timezone), days, minutes(t.start), minutes(t.end))
    assert cond.split is not None
    s = cond.split
    return c.SplitBucket(s.salt, s.offset * 100, (s.offset + s.percent) * 100)


def compile_action(action: Action, names: Names) -> c.RouteAction | None:
    """None for `continue`, which is a property of the rule, not something to do."""
    if action.start_flow is not None:
        f = action.start_flow
        return c.StartFlowAction(names.bots.get(f.bot, f.bot), f.flow, f.node)
    if action.handoff is not None:
        return c.HandoffAction(action.handoff.queue, action.handoff.text)
    if action.reply is not None:
        r = action.reply
        return c.ReplyTemplate(r.text, tuple(Button(b.id, b.title) for b in r.buttons))
    if action.tag is not None:
        return c.TagAction(tuple(action.tag))
    if action.set_attributes is not None:
        return c.SetAttributes(tuple(action.set_attributes.items()))
    if action.drop is not None:
        return c.DropAction()
    return None


def specialize(cond: c.Cond, channel_id: str, channel_type: str) -> c.Cond:
    """Decide channel conditions for one channel; fold the constants away."""
    if isinstance(cond, c.Channel):
        return c.TRUE if channel_id in cond.ids or channel_type in cond.types else c.FALSE
    if isinstance(cond, c.Not):
        inner = specialize(cond.item, channel_id, channel_type)
        return c.Const(not inner.value) if isinstance(inner, c.Const) else c.Not(inner)
    if isinstance(cond, c.All | c.AnyOf):
        stop = c.FALSE if isinstance(cond, c.All) else c.TRUE
        kept = []
        for item in cond.items:
            item = specialize(item, channel_id, channel_type)
            if item == stop:
                return stop
            if not isinstance(item, c.Const):
                kept.append(item)
        if not kept:
            return c.TRUE if isinstance(cond, c.All) else c.FALSE
        return kept[0] if len(kept) == 1 else type(cond)(tuple(kept))
    return cond
