"""Placeholders in recovery texts and template parameters: {{event.*}}, {{contact.*}}, with
`{{name | fallback}}` as in flows and one filter, `{{event.value | currency}}` (the event's money).

A WhatsApp template is rendered into the Cloud API's shape here; the channel module sends it as is.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from engine.brain.flows.templates import lookup, split, text_of

SYMBOLS = {"EUR": "€", "USD": "$", "GBP": "£", "JPY": "¥", "BRL": "R$", "INR": "₹"}
FILTERS = ("currency",)


@dataclass(frozen=True, slots=True)
class Scope:
    """What placeholders read: the event (type, value, currency, data, ...) and the contact."""

    event: dict[str, Any]
    contact: dict[str, Any]

    def resolve(self, path: tuple[str, ...]) -> Any:
        root = {"event": self.event, "contact": self.contact}
        return lookup(root, path)


def money(value: Any, currency: str | None) -> str:
    try:
        amount = float(value)
    except (TypeError, ValueError):
        return ""
    code = (currency or "").upper()
    symbol = SYMBOLS.get(code)
    return f"{symbol}{amount:,.2f}" if symbol else f"{amount:,.2f} {code}".strip()


def _value(path: tuple[str, ...], fallback: str, scope: Scope) -> str:
    value = scope.resolve(path)
    if fallback in FILTERS:
        return money(value, scope.event.get("currency"))
    return text_of(value) or fallback


def render(template: str, scope: Scope) -> str:
    return "".join(chunk if path is None else _value(path, chunk, scope) for chunk, path in split(template))


def _parameter(template: str, scope: Scope, sub_type: str | None) -> dict[str, Any]:
    parts = split(template)
    if len(parts) == 1 and parts[0][1] is not None and parts[0][0] == "currency":
        amount = scope.resolve(parts[0][1])
        code = str(scope.event.get("currency") or "USD").upper()
        try:
            thousandths = round(float(amount) * 1000)
        except (TypeError, ValueError):
            return {"type": "text", "text": "-"}
        return {
            "type": "currency",
            "currency": {"fallback_value": money(amount, code), "code": code, "amount_1000": thousandths},
        }
    text = render(template, scope) or "-"  # WhatsApp refuses an empty parameter
    if sub_type == "quick_reply":
        return {"type": "payload", "payload": text}
    return {"type": "text", "text": text}


def whatsapp_template(row: dict[str, Any], scope: Scope) -> tuple[dict[str, Any], str]:
    """(the Cloud API `template` object, its text as the contact reads it) for a channel_templates row."""
    components = []
    body_values: list[str] = []
    for comp in row["components"]:
        params = [_parameter(p, scope, comp.get("sub_type")) for p in comp.get("parameters", [])]
        item: dict[str, Any] = {"type": comp["type"], "parameters": params}
        if comp["type"] == "button":
            item.update(sub_type=comp["sub_type"], index=str(comp["index"]))
        if comp["type"] == "body":
            body_values = [
                p.get("text") or p.get("currency", {}).get("fallback_value") or p.get("payload", "") for p in params
            ]
        if params:
            components.append(item)
    template = {"name": row["name"], "language": {"code": row["language"]}, "components": components}
    preview = row.get("text") or f"[template {row['name']}]"
    preview = re.sub(r"\{\{(\d+)\}\}", lambda m: _nth(body_values, int(m.group(1))), preview)
    return template, preview


def _nth(values: list[str], n: int) -> str:
    return values[n - 1] if 0 < n <= len(values) else ""
