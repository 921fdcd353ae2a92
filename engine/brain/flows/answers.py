"""Checking an answer to an ask node: (ok, value to store). No I/O."""

from __future__ import annotations

import re
from typing import Any

from engine.brain.flows.flow_models import Validation
from engine.brain.routing.text import phrase
from engine.patterns import compile_pattern

EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s.]{2,}$")
PHONE_NOISE = re.compile(r"[\s().\-]")
PHONE = re.compile(r"^\+?\d{7,15}$")


def check(rule: Validation, text: str | None, payload: str | None) -> tuple[bool, Any]:
    answer = (text or "").strip()
    if rule.kind == "choice":
        return _choice(rule, answer, payload)
    if not answer:
        return False, None
    if rule.kind == "number":
        try:
            number = float(answer.replace(",", ".")) if answer.count(",") <= 1 else None
        except ValueError:
            return False, None
        if number is None or number != number or number in (float("inf"), float("-inf")):
            return False, None
        if (rule.min is not None and number < rule.min) or (rule.max is not None and number > rule.max):
            return False, None
        return True, int(number) if number.is_integer() else number
    if rule.kind == "email":
        return (True, answer.lower()) if EMAIL.match(answer) else (False, None)
    if rule.kind == "phone":
        digits = PHONE_NOISE.sub("", answer)
        return (True, digits) if PHONE.match(digits) else (False, None)
    if rule.kind == "regex":
        assert rule.pattern is not None
        return (True, answer) if compile_pattern(rule.pattern).fullmatch(answer) else (False, None)
    if (rule.min is not None and len(answer) < rule.min) or (rule.max is not None and len(answer) > rule.max):
        return False, None
    return True, answer


def _choice(rule: Validation, answer: str, payload: str | None) -> tuple[bool, Any]:
    """A button press (payload = choice id) or a typed id, title or synonym, any case or accents."""
    if payload is not None:
        for choice in rule.choices:
            if payload == choice.id:
                return True, choice.id
    said = phrase(answer)
    if not said:
        return False, None
    for choice in rule.choices:
        if said in {phrase(x) for x in (choice.id, choice.title, *choice.synonyms)}:
            return True, choice.id
    return False, None
