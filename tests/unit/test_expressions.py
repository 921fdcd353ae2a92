from __future__ import annotations

from typing import Any

import pytest

from engine.brain.flows.expressions import ExpressionError, evaluate, names, parse
from engine.brain.flows.templates import lookup, render, render_value

SCOPE: dict[str, Any] = {
    "age": 30,
    "qty": "7",
    "name": "Ana",
    "tags": ["vip", "es"],
    "order": {"status": "shipped", "items": [{"sku": "A1"}]},
    "message": {"text": "Quiero un REEMBOLSO", "payload": None},
    "flag": False,
}


def ev(source: str) -> Any:
    return evaluate(parse(source), lambda path: lookup(SCOPE, path))


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("age >= 18", True),
        ("age < 18", False),
        ("qty == 7", True),  # numeric strings compare as numbers
        ("qty > 5 and qty < 10", True),
        ("name == 'Ana'", True),
        ('name != "Ana"', False),
        ("'vip' in tags", True),
        ("'x' not in tags", True),
        ("order.status in ['shipped', 'delivered']", True),
        ("order.items.0.sku == 'A1'", True),
        ("message.text contains 'reembolso'", True),  # case-insensitive
        ("message.text matches '^Quiero'", True),
        ("message.text startswith 'quiero'", True),
        ("not flag", True),
        ("flag or age > 20", True),
        ("not (age > 20 and name == 'Bob')", True),
        ("missing == null", True),
        ("missing > 3", False),  # mismatched types compare false, never raise
        ("name > 3", False),
        ("age == 30.0", True),
        ("-1 < 0", True),
        ("true and not false", True),
    ],
)
def test_evaluates(source: str, expected: Any) -> None:
    assert ev(source) is expected


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("age >", "expected a value at the end"),
        ("age == 'x", "unexpected"),
        ("(age > 1", r"expected \) at the end"),
        ("age > 1 1", "unexpected '1' at column 9"),
        ("name matches '('", "invalid regex"),
        ("__import__('os')", "unexpected '\\('"),
        ("a ! b", "unexpected '!"),
    ],
)
def test_rejects(source: str, message: str) -> None:
    with pytest.raises(ExpressionError, match=message):
        parse(source)


def test_names() -> None:
    assert names(parse("a.b > 1 and c in [d, 'x'] or not e")) == {("a", "b"), ("c",), ("d",), ("e",)}


def test_templates() -> None:
    resolve = lambda path: lookup(SCOPE, path)  # noqa: E731
    assert render("Hi {{ name }}, {{order.status}} {{missing}}!", resolve) == "Hi Ana, shipped !"
    assert render("{{tags}} {{age}} {{flag}}", resolve) == '["vip","es"] 30 false'
    assert render_value({"n": "{{age}}", "s": "n={{age}}", "l": ["{{name}}"]}, resolve) == {
        "n": 30, "s": "n=30", "l": ["Ana"]
    }  # fmt: skip
