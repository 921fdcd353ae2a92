"""Tenant and user patterns run on RE2: refused at save time with the field's path when RE2 cannot run
them, linear in the input, capped; a bad pattern from a variable is the condition node's error."""

from __future__ import annotations

from typing import Any

import pytest

from engine import patterns
from engine.admin.sections import DefinitionError, check_references, parse_section
from engine.brain.flows import expressions
from engine.brain.flows.answers import check
from engine.brain.flows.flow_models import Validation
from tests.unit.test_flows import Chat, FakeEnv, make_flow

FLOW = {"bot": "shop", "slug": "main"}


def problems(section: dict[str, Any]) -> list[str]:
    try:
        parsed = parse_section(section)
    except DefinitionError as exc:
        return exc.problems
    return check_references(parsed, {"shop": "bot-1"}, {}, set(), {})[0]


@pytest.mark.parametrize(
    ("section", "expected"),
    [
        (  # a back-reference: Python's re runs it, RE2 cannot
            {"rules": [{"name": "r", "conditions": {"any": [{"regex": r"(a)\1"}]}, "actions": ["drop"]}]},
            "rules[0].conditions.any[0].regex: invalid regex",
        ),
        (  # look-ahead
            {
                "flows": [
                    {
                        **FLOW,
                        "nodes": [
                            {
                                "id": "a",
                                "type": "ask",
                                "prompt": "?",
                                "var": "v",
                                "validate": {"kind": "regex", "pattern": r"(?=\d)\d+"},
                            },
                        ],
                    }
                ]
            },
            "flows[0].nodes[a].validate.pattern: invalid regex",
        ),
        (
            {
                "flows": [
                    {
                        **FLOW,
                        "nodes": [
                            {
                                "id": "a",
                                "type": "condition",
                                "branches": [{"when": "message.text matches '(?<!x)y'", "next": "a"}],
                            },
                        ],
                    }
                ]
            },
            "flows[0].nodes[a].branches[0].when: invalid regex",
        ),
        (
            {
                "flows": [
                    {
                        **FLOW,
                        "nodes": [
                            {
                                "id": "a",
                                "type": "condition",
                                "branches": [{"when": "(" * 200 + "1" + ")" * 200, "next": "a"}],
                            },
                        ],
                    }
                ]
            },
            "flows[0].nodes[a].branches[0].when: nested deeper than 32 levels",
        ),
    ],
)
def test_refused_at_save_time_with_the_path(section: dict[str, Any], expected: str) -> None:
    found = problems(section)
    assert any(p.startswith(expected) for p in found), found


def test_deep_nesting_is_an_expression_error_not_a_recursion_error() -> None:
    for opening, closing in (("(", ")"), ("[", "]"), ("not ", "")):
        with pytest.raises(expressions.ExpressionError, match="nested deeper"):
            expressions.parse(opening * 200 + "1" + closing * 200)
    assert expressions.evaluate(expressions.parse("(" * 30 + "1" + ")" * 30), lambda p: None) == 1


def test_pathological_pattern_runs_in_linear_time_on_capped_input() -> None:
    p = patterns.compile_pattern(r"(a+)+$")
    assert not p.search("a" * 29 + "!")  # exponential on a backtracking engine
    assert p.search("x" * (patterns.MAX_INPUT + 10) + "aaa") is False  # past the cap: not looked at
    assert not p.fullmatch("a" * (patterns.MAX_INPUT + 1))
    assert check(Validation(kind="regex", pattern=r"(a+)+$"), "a" * 29 + "!", None) == (False, None)


def test_too_long_pattern_is_refused() -> None:
    with pytest.raises(patterns.PatternError, match="longer than"):
        patterns.check("a" * (patterns.MAX_PATTERN + 1))


async def test_invalid_pattern_from_a_variable_is_the_condition_nodes_error() -> None:
    flow = make_flow(
        [
            {"id": "ask", "type": "ask", "prompt": "Pattern?", "var": "pat", "next": "test"},
            {"id": "test", "type": "condition", "branches": [{"when": "message.text matches pat", "next": "yes"}],
             "else": "no"},
            {"id": "yes", "type": "message", "text": "matched"},
            {"id": "no", "type": "message", "text": "no match"},
        ]
    )  # fmt: skip
    chat = Chat(FakeEnv(flow))
    await chat.send("hi", start=flow)
    out = await chat.send(r"(a)\1")  # the answer becomes the pattern, and the text it is tested on
    assert [r.text for r in out.replies] == ["no match"]
    assert len(out.errors) == 1
    assert out.errors[0].startswith("flow main: condition at node test: branches[0]: invalid regex")
