"""The straightforward evaluator: every rule, in priority order, read straight off its definition.

No index and no channel pre-pass. It is the reference the compiled matcher is checked against (in
tests and in the benchmark, on the same messages) and the benchmark's baseline. Regexes compile once
through the pattern cache, and the message text is folded once per message (Message), as anyone would.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from zoneinfo import ZoneInfo

from engine.brain.routing import compiled as c
from engine.brain.routing.compiler import Names, compile_action, minutes
from engine.brain.routing.message import Message
from engine.brain.routing.rule_models import DAYS, Condition, Rule
from engine.brain.routing.text import bucket, phrase
from engine.patterns import compile_pattern


def evaluate(rules: Sequence[Rule], m: Message, names: Names) -> c.Decision:
    """rules must already be in evaluation order (matcher.sort_rules)."""
    matched: list[str] = []
    actions: list[c.RouteAction] = []
    for rule in rules:
        if rule.status != "active" or not holds(rule.conditions, m, names):
            continue
        matched.append(rule.name)
        actions.extend(a for a in (compile_action(x, names) for x in rule.actions) if a is not None)
        if not rule.continues:
            break
    return c.Decision(tuple(matched), tuple(actions)) if matched else c.NO_MATCH


def holds(cond: Condition | None, m: Message, names: Names) -> bool:  # noqa: C901 - one branch per kind
    if cond is None:
        return True
    if cond.all is not None:
        return all(holds(x, m, names) for x in cond.all)
    if cond.any is not None:
        return any(holds(x, m, names) for x in cond.any)
    if cond.not_ is not None:
        return not holds(cond.not_, m, names)
    if cond.channel_type is not None:
        return m.channel_type in {t.value for t in cond.channel_type}
    if cond.channel is not None:
        return m.channel_id in {names.channels.get(x, x) for x in cond.channel}
    if cond.message_type is not None:
        return m.type in {t.value for t in cond.message_type}
    if cond.contains is not None:
        return any(f" {phrase(k)} " in m.spaced for k in cond.contains)
    if cond.starts_with is not None:
        return any(m.spaced.startswith(f" {phrase(p)} ") for p in cond.starts_with)
    if cond.equals is not None:
        return any(m.spaced == f" {phrase(v)} " for v in cond.equals)
    if cond.regex is not None:
        return compile_pattern(cond.regex).search(m.text)
    if cond.payload is not None:
        return m.payload is not None and m.payload in cond.payload
    if cond.attribute is not None:
        return _attribute(cond, m)
    if cond.new_conversation is not None:
        return m.is_new == cond.new_conversation
    if cond.status is not None:
        return m.status in cond.status
    if cond.time is not None:
        t = cond.time
        local = datetime.fromtimestamp(m.timestamp, ZoneInfo(t.timezone or names.timezone))
        days = frozenset(DAYS.index(d) for d in t.days)
        now = (local.weekday(), local.hour * 60 + local.minute)
        return c.in_window(now, days, minutes(t.start), minutes(t.end))
    assert cond.split is not None
    s = cond.split
    return s.offset * 100 <= bucket(s.salt, m.contact_id) < (s.offset + s.percent) * 100


def _attribute(cond: Condition, m: Message) -> bool:
    a = cond.attribute
    assert a is not None
    if a.exists is not None:
        return (m.attributes.get(a.name) is not None) == a.exists
    if a.name not in m.attributes:
        return False
    value = m.attributes[a.name]
    return value in a.in_ if a.in_ is not None else value == a.equals
