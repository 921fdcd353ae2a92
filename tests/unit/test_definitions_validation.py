from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from engine.admin.sections import DefinitionError, check_references, parse_section
from engine.admin.tenant_file import BRAIN_SECTIONS, expand_env

BOTS = {"shop": "bot-1"}
CHANNELS = {"wa": "ch-1"}
GOOD_FLOW = {"bot": "shop", "slug": "main", "nodes": [{"id": "hi", "type": "message", "text": "Hi"}]}


def problems(section: dict[str, Any]) -> list[str]:
    """Every error, from the schema or from the cross-references."""
    try:
        parsed = parse_section(section)
    except DefinitionError as exc:
        return exc.problems
    return check_references(parsed, BOTS, CHANNELS, set(), {})[0]


def rule(conditions: Any = None, actions: Any = ("drop",)) -> dict[str, Any]:
    return {"name": "r", "conditions": conditions, "actions": list(actions)}


@pytest.mark.parametrize(
    ("section", "expected"),
    [
        (
            {"rules": [rule(), rule({"all": [{"contains": "a"}, {"regex": "(["}]})]},
            "rules[1].conditions.all[1].regex: invalid regex '(['",
        ),
        ({"rules": [rule({"colour": "red"})]}, "rules[0].conditions.colour: Extra inputs are not permitted"),
        ({"rules": [rule({"contains": "a", "regex": "b"})]}, "rules[0].conditions: a condition needs exactly one of"),
        ({"rules": [rule({"time": {"start": "25:00"}})]}, "rules[0].conditions.time.start: expected HH:MM"),
        ({"rules": [rule({"time": {"timezone": "Mars/Olympus"}})]}, "unknown time zone 'Mars/Olympus'"),
        ({"rules": [rule({"split": {"percent": 150}})]}, "rules[0].conditions.split.percent"),
        ({"rules": [rule({"contains": "?!"})]}, "rules[0].conditions.contains: '?!' has no words"),
        (
            {"rules": [rule(actions=[{"start_flow": {"bot": "nobot", "flow": "main"}}])]},
            "rules[0].actions[0].start_flow.bot: unknown bot 'nobot'",
        ),
        (
            {"rules": [rule(actions=[{"start_flow": {"bot": "shop", "flow": "nope"}}])], "flows": [GOOD_FLOW]},
            "rules[0].actions[0].start_flow.flow: bot 'shop' has no flow 'nope'",
        ),
        (
            {
                "rules": [rule(actions=[{"start_flow": {"bot": "shop", "flow": "main", "node": "x"}}])],
                "flows": [GOOD_FLOW],
            },
            "rules[0].actions[0].start_flow.node: flow 'main' has no node 'x'",
        ),
        (
            {"rules": [rule({"any": [{"channel": "telegram-main"}]})]},
            "rules[0].conditions.any[0].channel: unknown channel 'telegram-main'",
        ),
        ({"rules": [rule(actions=["explode"])]}, "rules[0].actions[0]"),
        ({"rules": [rule(), rule()]}, "rules[1].name: duplicate name 'r'"),
        (
            {"flows": [{**GOOD_FLOW, "nodes": [{"id": "a", "type": "teleport"}]}]},
            "flows[0].nodes[a]: Input tag 'teleport' found using 'type' does not match",
        ),
        (
            {"flows": [{**GOOD_FLOW, "nodes": [{"id": "a", "type": "message"}]}]},
            "flows[0].nodes[a].text: Field required",
        ),
        (
            {"flows": [{**GOOD_FLOW, "nodes": [{"id": "a", "type": "message", "text": "x", "next": "zz"}]}]},
            "flows[0].nodes[a].next: no node 'zz'",
        ),
        (
            {"flows": [{**GOOD_FLOW, "nodes": [{"id": "a", "type": "message", "text": "Hi {{name}}"}]}]},
            "flows[0].nodes[a].text: variable 'name' is read before any node sets it",
        ),
        (
            {
                "flows": [
                    {
                        **GOOD_FLOW,
                        "nodes": [{"id": "a", "type": "condition", "branches": [{"when": "x >", "next": "a"}]}],
                    }
                ]
            },
            "flows[0].nodes[a].branches[0].when: expected a value at the end",
        ),
        (
            {"flows": [{**GOOD_FLOW, "nodes": [{"id": "a", "type": "tool", "tool": "nope"}]}]},
            "flows[0].nodes[a].tool: unknown tool 'nope'",
        ),
        (
            {"flows": [{**GOOD_FLOW, "nodes": [{"id": "a", "type": "goto", "flow": "nope"}]}]},
            "flows[0].nodes[a].flow: unknown flow 'nope' of bot 'shop'",
        ),
        (
            {
                "flows": [
                    {
                        **GOOD_FLOW,
                        "nodes": [
                            {
                                "id": "a",
                                "type": "ask",
                                "prompt": "?",
                                "var": "v",
                                "validate": {"kind": "regex", "pattern": "("},
                            }
                        ],
                    }
                ]
            },
            "flows[0].nodes[a].validate.pattern: invalid regex",
        ),
        (
            {"flows": [{**GOOD_FLOW, "default": True}, {**GOOD_FLOW, "slug": "other", "default": True}]},
            "flows[1].default: bot 'shop' already has a default flow",
        ),
        ({"flows": [{**GOOD_FLOW, "bot": "ghost"}]}, "flows[0].bot: unknown bot 'ghost'"),
        ({"tools": [{"slug": "t", "url": "ftp://x"}]}, "tools[0].url: String should match pattern"),
        ({"faqs": [{"bot": "ghost", "question": "q", "answer": "a"}]}, "faqs[0].bot: unknown bot 'ghost'"),
    ],
)
def test_rejected_with_the_path_of_the_bad_field(section: dict[str, Any], expected: str) -> None:
    found = problems(section)
    assert any(p.startswith(expected) or expected in p for p in found), found


def test_variables_set_on_some_path_and_inputs_are_readable() -> None:
    nodes = [
        {"id": "ask", "type": "ask", "prompt": "?", "var": "n", "next": "show"},
        {"id": "show", "type": "message", "text": "{{n}} {{given}} {{contact.name}} {{message.text}}"},
    ]
    assert problems({"flows": [{**GOOD_FLOW, "inputs": ["given"], "nodes": nodes}]}) == []


def test_unreachable_nodes_are_warnings() -> None:
    nodes = [{"id": "a", "type": "end"}, {"id": "orphan", "type": "message", "text": "never"}]
    parsed = parse_section({"flows": [{**GOOD_FLOW, "nodes": nodes}]})
    errors, warnings = check_references(parsed, BOTS, CHANNELS, set(), {})
    assert errors == []
    assert warnings == ["flows[0].nodes[orphan]: unreachable from 'a'"]


def test_the_example_shop_brain_is_valid() -> None:
    text = expand_env((Path(__file__).parents[2] / "examples" / "tenant.yaml").read_text())
    section = {k: v for k, v in yaml.safe_load(text).items() if k in BRAIN_SECTIONS}
    parsed = parse_section(section)
    errors, warnings = check_references(parsed, BOTS, None, set(), {})
    assert (errors, warnings) == ([], [])
