from __future__ import annotations

import random
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import re2
from pydantic import ValidationError

from engine.brain.routing import compiled as c
from engine.brain.routing.compiler import Names
from engine.brain.routing.evaluator import evaluate
from engine.brain.routing.matcher import compile_rules, sort_rules
from engine.brain.routing.message import Message
from engine.brain.routing.regex_words import required_words
from engine.brain.routing.rule_models import Rule
from engine.brain.routing.text import CASE_TWINS, fold, regex_words

NAMES = Names(timezone="Europe/Madrid", bots={"shop": "bot-1"}, channels={"wa-main": "ch-wa"})
# Wednesday 2026-01-14 10:30 in Madrid (09:30 UTC)
WED_1030_MADRID = datetime(2026, 1, 14, 10, 30, tzinfo=ZoneInfo("Europe/Madrid")).timestamp()


def msg(text: str = "", **kw: Any) -> Message:
    base: dict[str, Any] = {
        "text": text, "type": "text", "channel_id": "ch-wa", "channel_type": "whatsapp",
        "contact_id": "contact-1", "timestamp": WED_1030_MADRID,
    }  # fmt: skip
    return Message(**{**base, **kw})


def rule(name: str, conditions: Any, *actions: Any, priority: int = 100) -> Rule:
    return Rule.model_validate(
        {"name": name, "priority": priority, "conditions": conditions, "actions": list(actions) or [{"tag": name}]}
    )


def route(rules: list[Rule], m: Message) -> c.Decision:
    """Both implementations, which must agree."""
    compiled = compile_rules(rules, NAMES).route(m)
    assert evaluate(sort_rules(rules), m, NAMES) == compiled
    return compiled


def matches(conditions: Any, m: Message) -> bool:
    return route([rule("r", conditions)], m).rules == ("r",)


@pytest.mark.parametrize(
    ("conditions", "text", "expected"),
    [
        ({"contains": "agent"}, "I want an AGENT please", True),
        ({"contains": "agent"}, "agents are busy", False),  # whole words only
        ({"contains": "cafe"}, "¿Dónde está el CAFÉ?", True),  # accents and case
        ({"contains": "café"}, "cafe", True),
        ({"contains": ["refund", "talk to a human"]}, "can I talk to a human?", True),
        ({"contains": "talk to a human"}, "talk to a humanoid", False),
        ({"starts_with": "order"}, "Order #123 status", True),
        ({"starts_with": "order"}, "orders", False),
        ({"starts_with": "my order"}, "My order is late", True),
        ({"starts_with": "order"}, "my order", False),
        ({"equals": "hi"}, "Hi!", True),
        ({"equals": "hi"}, "hi there", False),
        ({"regex": r"#\d{4,}"}, "order #12345", True),
        ({"regex": r"#\d{4,}"}, "order #12", False),
        ({"regex": r"(?i)\border\s+(\d+)"}, "ORDER 77", True),
    ],
)
def test_text_conditions(conditions: Any, text: str, expected: bool) -> None:
    assert matches(conditions, msg(text)) is expected


def test_channel_message_type_and_payload() -> None:
    assert matches({"channel_type": ["whatsapp", "telegram"]}, msg("x"))
    assert not matches({"channel_type": "slack"}, msg("x"))
    assert matches({"channel": ["wa-main"]}, msg("x"))  # by slug
    assert matches({"channel": "ch-wa"}, msg("x"))  # by id
    assert not matches({"channel": "other"}, msg("x"))
    assert matches({"message_type": "button"}, msg("", type="button"))
    assert not matches({"message_type": "button"}, msg("x"))
    assert matches({"payload": "BUY"}, msg("", type="button", payload="BUY"))
    assert not matches({"payload": "BUY"}, msg("BUY"))


def test_attribute_new_and_status_conditions() -> None:
    m = msg("x", attributes={"country": "es", "vip": True, "gone": None}, is_new=True, status="human")
    assert matches({"attribute": {"name": "country", "equals": "es"}}, m)
    assert not matches({"attribute": {"name": "country", "equals": "mx"}}, m)
    assert matches({"attribute": {"name": "country", "in": ["mx", "es"]}}, m)
    assert matches({"attribute": {"name": "vip", "exists": True}}, m)
    assert not matches({"attribute": {"name": "gone", "exists": True}}, m)
    assert matches({"attribute": {"name": "missing", "exists": False}}, m)
    assert matches({"new_conversation": True}, m)
    assert not matches({"new_conversation": False}, m)
    assert matches({"status": "human"}, m)
    assert not matches({"status": ["bot"]}, m)


def test_composition() -> None:
    cond = {"all": [{"contains": "refund"}, {"any": [{"channel_type": "telegram"}, {"not": {"equals": "x"}}]}]}
    assert matches(cond, msg("refund now"))
    assert matches(cond, msg("refund", channel_type="telegram", channel_id="t"))
    assert not matches({"all": [{"contains": "refund"}, {"not": {"equals": "refund"}}]}, msg("Refund!"))
    assert not matches(cond, msg("nothing"))
    assert not matches({"not": {"contains": "refund"}}, msg("refund"))


def test_time_window_in_the_tenant_time_zone() -> None:
    hours = {"time": {"days": ["mon", "tue", "wed", "thu", "fri"], "start": "09:00", "end": "18:00"}}
    assert matches(hours, msg("x"))  # 10:30 in Madrid
    # 17:30 UTC on that Wednesday is 18:30 in Madrid: closed, though it is before 18:00 in UTC.
    late = datetime(2026, 1, 14, 17, 30, tzinfo=ZoneInfo("UTC")).timestamp()
    assert not matches(hours, msg("x", timestamp=late))
    # An explicit zone wins over the tenant's: 10:30 Madrid is 04:30 in New York.
    ny = {"time": {"start": "09:00", "end": "18:00", "timezone": "America/New_York"}}
    assert not matches(ny, msg("x"))
    saturday = datetime(2026, 1, 17, 10, 30, tzinfo=ZoneInfo("Europe/Madrid")).timestamp()
    assert not matches(hours, msg("x", timestamp=saturday))


def test_overnight_window_belongs_to_the_day_it_opened() -> None:
    night = {"time": {"days": ["fri"], "start": "22:00", "end": "06:00"}}
    at = lambda d, h: datetime(2026, 1, d, h, 0, tzinfo=ZoneInfo("Europe/Madrid")).timestamp()  # noqa: E731
    assert matches(night, msg("x", timestamp=at(16, 23)))  # Friday 23:00
    assert matches(night, msg("x", timestamp=at(17, 5)))  # Saturday 05:00, the Friday night
    assert not matches(night, msg("x", timestamp=at(17, 23)))  # Saturday 23:00
    assert not matches(night, msg("x", timestamp=at(16, 5)))  # Friday 05:00 is Thursday's night


def test_split_is_sticky_per_contact_and_close_to_its_percentage() -> None:
    half = {"split": {"percent": 30, "salt": "exp-1"}}
    rest = {"split": {"percent": 70, "offset": 30, "salt": "exp-1"}}
    hits = 0
    for i in range(2000):
        m = msg("x", contact_id=f"contact-{i}")
        a, b = matches(half, m), matches(rest, m)
        assert a != b  # complementary arms
        assert matches(half, msg("other text", contact_id=f"contact-{i}")) is a  # sticky
        hits += a
    assert 500 < hits < 700


def test_priority_first_match_wins_and_continue_adds_actions() -> None:
    rules = [
        rule("low", {"contains": "agent"}, {"reply": {"text": "low"}}, priority=50),
        rule("tagger", {"contains": "agent"}, {"tag": "wants-agent"}, "continue", priority=10),
        rule("high", {"contains": "agent"}, "handoff", priority=20),
        rule("never", {"contains": "nothing"}, "drop", priority=1),
    ]
    d = route(rules, msg("agent please"))
    assert d.rules == ("tagger", "high")
    assert d.actions == (c.TagAction(("wants-agent",)), c.HandoffAction("default", None))
    assert route(rules, msg("hello")) == c.NO_MATCH


def test_ties_break_by_name_and_disabled_rules_never_match() -> None:
    rules = [rule("b", {"contains": "x"}), rule("a", {"contains": "x"})]
    assert route(rules, msg("x")).rules == ("a",)
    off = Rule.model_validate({"name": "a", "status": "disabled", "actions": ["drop"]})
    assert route([off], msg("x")) == c.NO_MATCH


def test_actions_compile() -> None:
    r = rule(
        "all-actions",
        None,
        {"start_flow": {"bot": "shop", "flow": "orders", "node": "ask"}},
        {"reply": {"text": "Hi {{contact.name}}", "buttons": [{"id": "a", "title": "A"}]}},
        {"set_attributes": {"lang": "es"}},
        "drop",
    )
    d = route([r], msg("anything"))
    assert d.actions[0] == c.StartFlowAction("bot-1", "orders", "ask")  # bot slug -> id
    assert d.actions[1].text == "Hi {{contact.name}}"  # type: ignore[union-attr]
    assert d.actions[2] == c.SetAttributes((("lang", "es"),))
    assert isinstance(d.actions[3], c.DropAction)
    assert d.terminal


def test_rule_without_conditions_always_matches() -> None:
    assert route([rule("any", None)], msg("")).rules == ("any",)


@pytest.mark.parametrize(
    ("pattern", "words"),
    [
        (r"\border\s+#?\d+", {"order"}),
        (r"(?i)\bOrder\b", {"order"}),
        (r"\b(?:refund|return)\b", {"refund", "return"}),
        (r"^track my", {"track"}),
        (r"order\s*#?\d+", None),  # "order5" has no whole word "order"
        (r"\border\d", None),
        (r"^#\d{5}$", None),
        (r"(?a)\border\b", None),  # ASCII \b differs from the tokenizer's
        (r"\bfoo\b|\bbar\b", {"foo", "bar"}),
        (r"\bfoo\b|bar", None),
    ],
)
def test_required_words_of_a_regex(pattern: str, words: set[str] | None) -> None:
    assert required_words(pattern) == (frozenset(words) if words else None)


def test_regex_fold_is_sound() -> None:
    """Every character RE2 matches against an ASCII word character (case-insensitively) is an ASCII
    word character or one of CASE_TWINS, and RE2's \\w is ASCII: the split of regex_words is RE2's."""
    letters = re2.compile(r"(?i)[a-z0-9_]")
    word = re2.compile(r"\w")
    for code in range(0x10000):
        if 0xD800 <= code < 0xE000:
            continue  # surrogates are not text
        ch = chr(code)
        if letters.fullmatch(ch):
            assert (ch.isascii() and (ch.isalnum() or ch == "_")) or ch in CASE_TWINS, hex(code)
        assert bool(word.fullmatch(ch)) == (ch.isascii() and (ch.isalnum() or ch == "_")), hex(code)
    assert regex_words("Ça va, ORDER 12") == {"a", "va", "order", "12"}
    assert regex_words("\u212aey") is None


def test_regex_rules_match_non_ascii_text() -> None:
    long_s = "¿ \u017ftatus qué?"  # LATIN SMALL LETTER LONG S: RE2's (?i) equates it with "s"
    assert matches({"regex": r"(?i) status\b"}, msg(long_s))
    assert matches({"regex": r"(?i)\bkey\b"}, msg("a\u212aey"))  # KELVIN SIGN: k, and a \b before it
    assert matches({"regex": r"\bpedido\s+\d+"}, msg("Mi pedido 123, señor"))
    assert matches({"regex": r"\border\b"}, msg("éorder"))  # RE2's \b is ASCII: é is not a word character


def test_fold() -> None:
    assert fold("Ça VA, Ñandú") == "ca va, nandu"
    assert fold("STRASSE") == "strasse"


def test_invalid_definitions_name_the_field() -> None:
    with pytest.raises(ValidationError) as err:
        Rule.model_validate(
            {"name": "r", "conditions": {"all": [{"contains": "x"}, {"regex": "("}]}, "actions": ["drop"]}
        )
    assert err.value.errors()[0]["loc"] == ("conditions", "all", 1, "regex")
    with pytest.raises(ValidationError, match="exactly one of"):
        Rule.model_validate({"name": "r", "conditions": {"contains": "x", "equals": "y"}, "actions": ["drop"]})


def test_compiled_matcher_agrees_with_the_evaluator_on_random_rules() -> None:
    from tests.bench.bench_routing import build

    built, stream = build(tenants=3, rules=300, messages=3000, seed=11)
    for i, m in enumerate(stream):
        t = built[i % 3]
        assert t["router"].route(m) == evaluate(t["ordered"], m, t["names"])
    assert sum(1 for i, m in enumerate(stream) if built[i % 3]["router"].route(m).rules) > 1000


def test_shuffled_definition_order_does_not_change_decisions() -> None:
    rules = [rule(f"r{i}", {"contains": f"w{i % 7}"}, priority=i % 5) for i in range(40)]
    shuffled = rules[:]
    random.Random(3).shuffle(shuffled)
    for k in range(7):
        assert route(rules, msg(f"w{k}")) == route(shuffled, msg(f"w{k}"))
