"""The compiled matcher: rules indexed by the keys a message can be looked up with.

route() gathers the positions of candidate rules from the message's keys (words, first word, exact
text, payload, attribute values, type, ...), adds the rules without a key, and tests them in
priority order: the first match wins, unless it says `continue`.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from engine.brain.routing import compiled as c
from engine.brain.routing.compiler import KIND_RANK, CompiledRule, Names, compile_action, compile_condition, specialize
from engine.brain.routing.message import Message
from engine.brain.routing.regex_words import required_words
from engine.brain.routing.rule_models import Rule

Key = tuple[str, Any]
Index = dict[Any, tuple[int, ...]]


def index_keys(cond: c.Cond) -> list[Key] | None:  # noqa: C901 - one branch per kind
    """Keys such that the condition can only hold for a message having one of them; None if the
    condition has no such keys (it is then tested for every message)."""
    if isinstance(cond, c.All):
        options = [k for k in map(index_keys, cond.items) if k]
        return min(options, key=lambda ks: (max(KIND_RANK[k[0]] for k in ks), len(ks)), default=None)
    if isinstance(cond, c.AnyOf):
        found: list[Key] = []
        for item in cond.items:
            keys = index_keys(item)
            if not keys:
                return None
            found.extend(keys)
        return found
    if isinstance(cond, c.Contains):
        return [("word", w) for w in cond.words] + [("word", p.split()[0]) for p in cond.phrases]
    if isinstance(cond, c.StartsWith):
        return [("first", p.split()[0]) for p in cond.prefixes]
    if isinstance(cond, c.Equals):
        return [("equals", v) for v in cond.values]
    if isinstance(cond, c.Regex):
        words = required_words(cond.pattern.pattern)
        return [("rxword", w) for w in words] if words else None
    if isinstance(cond, c.Payload):
        return [("payload", v) for v in cond.values]
    if isinstance(cond, c.AttrEquals) and _hashable(cond.value):
        return [("attr", (cond.name, cond.value))]
    if isinstance(cond, c.AttrIn) and all(map(_hashable, cond.values)):
        return [("attr", (cond.name, v)) for v in cond.values]
    if isinstance(cond, c.AttrExists) and cond.exists:
        return [("exists", cond.name)]
    if isinstance(cond, c.IsNew) and cond.value:
        return [("new", True)]
    if isinstance(cond, c.MessageTypeIn):
        return [("type", t) for t in cond.types]
    if isinstance(cond, c.StatusIn):
        return [("status", s) for s in cond.statuses]
    return None


def _hashable(value: Any) -> bool:
    return isinstance(value, str | int | float | bool) or value is None


@dataclass(frozen=True, slots=True)
class ChannelMatcher:
    rules: tuple[CompiledRule, ...]
    always: tuple[int, ...]  # rules without an index key: tested for every message
    # kind -> key -> positions of the rules indexed under it (KIND_RANK names the kinds)
    words: Index
    rxwords: Index
    first: Index
    equals: Index
    payload: Index
    attr: Index  # (name, value) -> positions
    exists: Index
    new: Index
    type: Index
    status: Index
    attr_names: tuple[str, ...]  # attributes worth probing: some rule is indexed on their value

    @classmethod
    def build(cls, rules: Sequence[CompiledRule]) -> ChannelMatcher:
        buckets: dict[str, defaultdict[Any, list[int]]] = {k: defaultdict(list) for k in KIND_RANK}
        always: list[int] = []
        for pos, rule in enumerate(rules):
            keys = index_keys(rule.cond)
            if keys is None:
                always.append(pos)
            for kind, key in set(keys or ()):
                buckets[kind][key].append(pos)
        ix = {kind: {k: tuple(v) for k, v in b.items()} for kind, b in buckets.items()}
        attr_names = tuple(sorted({name for name, _ in ix["attr"]}))
        return cls(
            tuple(rules), tuple(always), ix["word"], ix["rxword"], ix["first"], ix["equals"], ix["payload"],
            ix["attr"], ix["exists"], ix["new"], ix["type"], ix["status"], attr_names,
        )  # fmt: skip

    def candidates(self, m: Message) -> list[int]:
        """Positions of the rules that can match m, in priority order. Runs per message: locals,
        no allocation but the result set, and empty indexes skipped."""
        found = set(self.always)
        # A message has a handful of words and an index thousands: probe the index per word.
        get = self.words.get
        for word in m.words:
            hit = get(word)
            if hit is not None:
                found.update(hit)
        if self.rxwords:  # non-ASCII text needs its own split for regex keys: only when some rule has one
            self._regex_candidates(m, found)
        if self.first and m.first in self.first:
            found.update(self.first[m.first])
        if self.equals and m.spaced in self.equals:
            found.update(self.equals[m.spaced])
        if self.payload and m.payload in self.payload:
            found.update(self.payload[m.payload])
        if self.type and m.type in self.type:
            found.update(self.type[m.type])
        if self.status and m.status in self.status:
            found.update(self.status[m.status])
        if self.new and m.is_new:
            found.update(self.new[True])
        if m.attributes and (self.attr_names or self.exists):
            self._attribute_candidates(m.attributes, found)
        return sorted(found)

    def _regex_candidates(self, m: Message, found: set[int]) -> None:
        rx_words = m.regex_words
        if rx_words is None:  # no split is sure for this text: every regex rule is a candidate
            for positions in self.rxwords.values():
                found.update(positions)
            return
        get = self.rxwords.get
        for word in rx_words:
            hit = get(word)
            if hit is not None:
                found.update(hit)

    def _attribute_candidates(self, attributes: dict[str, Any], found: set[int]) -> None:
        attr, exists = self.attr, self.exists
        for name in self.attr_names:
            value = attributes.get(name)
            if _hashable(value) and (name, value) in attr:
                found.update(attr[(name, value)])
        for name in exists.keys() & attributes.keys():
            if attributes[name] is not None:
                found.update(exists[name])

    def route(self, m: Message) -> c.Decision:
        names: list[str] = []
        actions: list[c.RouteAction] = []
        rules = self.rules
        for pos in self.candidates(m):
            rule = rules[pos]
            if rule.cond.test(m):
                names.append(rule.name)
                actions.extend(rule.actions)
                if not rule.continues:
                    break
        return c.Decision(tuple(names), tuple(actions)) if names else c.NO_MATCH


@dataclass(frozen=True, slots=True)
class TenantRouter:
    """All of a tenant's active rules, with one ChannelMatcher per channel built on first use."""

    rules: tuple[CompiledRule, ...]
    matchers: dict[tuple[str, str], ChannelMatcher] = field(default_factory=dict)

    def matcher(self, channel_id: str, channel_type: str) -> ChannelMatcher:
        found = self.matchers.get((channel_id, channel_type))
        if found is None:
            kept: list[CompiledRule] = []
            for rule in self.rules:
                cond = specialize(rule.cond, channel_id, channel_type)
                if cond != c.FALSE:
                    kept.append(CompiledRule(len(kept), rule.name, cond, rule.actions, rule.continues))
            found = self.matchers[(channel_id, channel_type)] = ChannelMatcher.build(kept)
        return found

    def route(self, m: Message) -> c.Decision:
        return self.matcher(m.channel_id, m.channel_type).route(m)


def sort_rules(rules: Iterable[Rule]) -> list[Rule]:
    """Active rules in evaluation order: priority ascending, then name."""
    return sorted((r for r in rules if r.status == "active"), key=lambda r: (r.priority, r.name))


def compile_rules(rules: Iterable[Rule], names: Names) -> TenantRouter:
    compiled = []
    for pos, rule in enumerate(sort_rules(rules)):
        actions = tuple(a for a in (compile_action(x, names) for x in rule.actions) if a is not None)
        compiled.append(
            CompiledRule(pos, rule.name, compile_condition(rule.conditions, names), actions, rule.continues)
        )
    return TenantRouter(tuple(compiled))
