"""Flow definitions as saved (pydantic, at the edge): a graph of typed nodes joined by node ids.

Each node type declares its outgoing edges, the variables it writes and the templates or
expressions it reads, which is all the validator (flows.validate) and the interpreter need.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import Field, field_validator, model_validator

from engine.brain.routing.rule_models import ButtonDef
from engine.validation import RegexPattern, Strict

NODE_ID = r"^[A-Za-z0-9_\-]{1,64}$"
VAR = r"^[A-Za-z_][A-Za-z0-9_]{0,63}$"
Ref = tuple[str, str]  # (field, value): an edge target or a template/expression source


class Choice(Strict):
    id: str = Field(min_length=1)
    title: str = Field(min_length=1)
    synonyms: list[str] = []

    @model_validator(mode="before")
    @classmethod
    def _bare(cls, value: Any) -> Any:
        return {"id": value, "title": value} if isinstance(value, str) else value


class Validation(Strict):
    kind: Literal["text", "number", "email", "phone", "choice", "regex"] = "text"
    choices: list[Choice] = []
    pattern: RegexPattern | None = None  # kind regex: RE2 fullmatch on the trimmed answer
    min: float | None = None  # number: value bounds; text: length bounds
    max: float | None = None

    @model_validator(mode="after")
    def _complete(self) -> Validation:
        if self.kind == "choice" and not self.choices:
            raise ValueError("kind choice needs choices")
        if self.kind == "regex" and self.pattern is None:
            raise ValueError("kind regex needs a pattern")
        return self


class _Node(Strict):
    id: str = Field(pattern=NODE_ID)

    def edges(self) -> list[Ref]:
        return [(f, v) for f in ("next", "fallback", "error", "miss", "else_") if (v := getattr(self, f, None))]

    def writes(self) -> set[str]:
        var = getattr(self, "var", None)
        return {var} if var else set()

    def templates(self) -> list[tuple[str, Any]]:
        """(field, template value) pairs whose {{names}} this node reads."""
        return []

    def expressions(self) -> list[Ref]:
        return []


class MessageNode(_Node):
    type: Literal["message"]
    text: str = Field(min_length=1)
    buttons: list[ButtonDef] = []
    next: str | None = None

    def templates(self) -> list[tuple[str, Any]]:
        return [("text", self.text)] + [(f"buttons[{i}].title", b.title) for i, b in enumerate(self.buttons)]


class AskNode(_Node):
    type: Literal["ask"]
    prompt: str = Field(min_length=1)
    var: str = Field(pattern=VAR)
    validate_: Validation = Field(default_factory=Validation, alias="validate")
    buttons: list[ButtonDef] = []  # default: the choices, for kind choice
    retries: int = Field(default=2, ge=0, le=10)  # re-prompts before the fallback edge
    retry_prompt: str | None = None
    next: str | None = None
    fallback: str | None = None  # after too many invalid answers; none: the flow ends

    def templates(self) -> list[tuple[str, Any]]:
        return [("prompt", self.prompt)] + ([("retry_prompt", self.retry_prompt)] if self.retry_prompt else [])


class Branch(Strict):
    when: str
    next: str


class ConditionNode(_Node):
    type: Literal["condition"]
    branches: list[Branch] = Field(min_length=1)
    else_: str | None = Field(default=None, alias="else")

    def edges(self) -> list[Ref]:
        return [(f"branches[{i}].next", b.next) for i, b in enumerate(self.branches)] + super().edges()

    def expressions(self) -> list[Ref]:
        return [(f"branches[{i}].when", b.when) for i, b in enumerate(self.branches)]


class SetNode(_Node):
    type: Literal["set"]
    values: dict[str, Any] = Field(min_length=1)  # strings are templates
    next: str | None = None

    @field_validator("values")
    @classmethod
    def _names(cls, values: dict[str, Any]) -> dict[str, Any]:
        for name in values:
            if not re.match(VAR, name):
                raise ValueError(f"{name!r} is not a variable name")
        return values

    def writes(self) -> set[str]:
        return set(self.values)

    def templates(self) -> list[tuple[str, Any]]:
        return [(f"values.{k}", v) for k, v in self.values.items()]


class ToolNode(_Node):
    type: Literal["tool"]
    tool: str  # a tool slug, or a built-in: kb_search, memory_get, memory_set, http_json
    args: dict[str, Any] = {}  # strings are templates
    var: str | None = Field(default=None, pattern=VAR)  # where the result goes
    next: str | None = None
    error: str | None = None  # after a failed call; none: the flow ends with the error recorded

    def templates(self) -> list[tuple[str, Any]]:
        return [(f"args.{k}", v) for k, v in self.args.items()]


class FaqNode(_Node):
    type: Literal["faq"]
    var: str | None = Field(default=None, pattern=VAR)  # the matched question's answer
    threshold: float = Field(default=0.5, gt=0, le=1)
    next: str | None = None
    miss: str | None = None  # when nothing matches; none: say miss_text (if any) and go next
    miss_text: str | None = None


class KbSearchNode(_Node):
    type: Literal["kb_search"]
    query: str = "{{message.text}}"
    language: str = "english"
    limit: int = Field(default=3, ge=1, le=20)
    var: str | None = Field(default=None, pattern=VAR)  # the list of hits
    reply: bool = True  # send the best hit
    next: str | None = None
    miss: str | None = None
    miss_text: str | None = None

    def templates(self) -> list[tuple[str, Any]]:
        return [("query", self.query)]


class HandoffNode(_Node):
    type: Literal["handoff"]
    queue: str = "default"
    text: str | None = None

    def templates(self) -> list[tuple[str, Any]]:
        return [("text", self.text)] if self.text else []


class GotoNode(_Node):
    type: Literal["goto"]
    flow: str  # a flow slug of the same bot
    node: str | None = None


class EndNode(_Node):
    type: Literal["end"]
    text: str | None = None

    def templates(self) -> list[tuple[str, Any]]:
        return [("text", self.text)] if self.text else []


Node = Annotated[
    MessageNode
    | AskNode
    | ConditionNode
    | SetNode
    | ToolNode
    | FaqNode
    | KbSearchNode
    | HandoffNode
    | GotoNode
    | EndNode,
    Field(discriminator="type"),
]


class FlowDef(Strict):
    bot: str  # bot slug
    slug: str = Field(pattern=r"^[a-z0-9][a-z0-9_\-]{0,62}$")
    name: str | None = None
    default: bool = False  # the bot's default flow: runs when no rule says otherwise
    start: str | None = None  # default: the first node
    inputs: list[str] = []  # variables set before the flow starts (by another flow or a rule)
    nodes: list[Node] = Field(min_length=1)

    @property
    def start_node(self) -> str:
        return self.start or self.nodes[0].id

    def definition(self) -> dict[str, Any]:
        """What is stored and compared to decide whether an edit is a new version."""
        return self.model_dump(mode="json", by_alias=True, exclude_defaults=True)
