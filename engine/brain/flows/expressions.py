"""A small, safe expression language for condition nodes. No eval: a tokenizer, a recursive-descent
parser into frozen nodes, and an evaluator over a read-only scope.

    expr    := or
    or      := and ("or" and)*
    and     := not ("and" not)*
    not     := "not" not | compare
    compare := operand [("==" | "!=" | "<" | "<=" | ">" | ">=" | "in" | "not in" | "contains"
                         | "matches" | "startswith") operand]
    operand := number | string | true | false | null | name(.name)* | "[" [operand ("," operand)*] "]"
               | "(" expr ")"

Names read variables, or message.text / message.payload / message.type, or contact.name /
contact.<attribute>. Comparisons never raise: mismatched types compare false, numeric strings compare
as numbers, contains is case- and accent-insensitive on text, matches is an RE2 search (engine.patterns).
The one exception: a pattern that RE2 refuses, read from a variable at run time, raises ExpressionError
(a literal one is refused when the expression is saved). Nesting is bounded (MAX_DEPTH), so a deeply
nested expression is an ExpressionError at save time, not a RecursionError.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from engine.brain.routing.text import fold
from engine.patterns import PatternError, compile_pattern

_TOKEN = re.compile(
    r"""\s*(?:
    (?P<number>-?\d+(?:\.\d+)?)
  | (?P<string>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*')
  | (?P<op>==|!=|<=|>=|<|>|\(|\)|\[|\]|,)
  | (?P<name>[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z0-9_]+)*)
    )""",
    re.VERBOSE,
)
KEYWORDS = {"and", "or", "not", "in", "contains", "matches", "startswith", "true", "false", "null"}
MAX_DEPTH = 32  # nested parentheses, brackets and nots
MAX_SOURCE = 4000  # characters of one expression
COMPARISONS = {"==", "!=", "<", "<=", ">", ">=", "in", "not in", "contains", "matches", "startswith"}


class ExpressionError(ValueError):
    """The expression does not parse; the message says where."""


@dataclass(frozen=True, slots=True)
class Lit:
    value: Any


@dataclass(frozen=True, slots=True)
class Var:
    path: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class ListOf:
    items: tuple[Node, ...]


@dataclass(frozen=True, slots=True)
class BoolOp:
    op: str  # and | or
    items: tuple[Node, ...]


@dataclass(frozen=True, slots=True)
class NotOp:
    item: Node


@dataclass(frozen=True, slots=True)
class Compare:
    op: str
    left: Node
    right: Node


Node = Lit | Var | ListOf | BoolOp | NotOp | Compare


def tokenize(source: str) -> list[tuple[str, str, int]]:
    tokens: list[tuple[str, str, int]] = []
    pos = 0
    while pos < len(source):
        if source[pos:].strip() == "":
            break
        match = _TOKEN.match(source, pos)
        if match is None or match.end() == pos:
            raise ExpressionError(f"unexpected {source[pos:].strip()[:10]!r} at column {pos + 1}")
        kind = match.lastgroup or ""
        text, start = match.group(kind), match.start(kind)
        if kind == "name" and text in KEYWORDS:
            kind = "keyword"
        tokens.append((kind, text, start))
        pos = match.end()
    return tokens


class _Parser:
    def __init__(self, source: str) -> None:
        self.source = source
        if len(source) > MAX_SOURCE:
            raise ExpressionError(f"expression longer than {MAX_SOURCE} characters")
        self.tokens = tokenize(source)
        self.i = 0
        self.depth = 0

    def nest(self, token: tuple[str, str, int]) -> None:
        """One level deeper; the recursive descent stops at MAX_DEPTH with a clear error."""
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise ExpressionError(f"nested deeper than {MAX_DEPTH} levels at column {token[2] + 1}")

    def peek(self, offset: int = 0) -> tuple[str, str, int] | None:
        j = self.i + offset
        return self.tokens[j] if j < len(self.tokens) else None

    def take(self, text: str | None = None) -> tuple[str, str, int]:
        token = self.peek()
        if token is None or (text is not None and token[1] != text):
            where = f"column {token[2] + 1}" if token else "the end"
            raise ExpressionError(f"expected {text or 'a value'} at {where}")
        self.i += 1
        return token

    def at(self, text: str) -> bool:
        token = self.peek()
        return token is not None and token[1] == text and token[0] in ("keyword", "op")

    def parse(self) -> Node:
        node = self.or_()
        if self.peek() is not None:
            raise ExpressionError(f"unexpected {self.peek()[1]!r} at column {self.peek()[2] + 1}")  # type: ignore[index]
        return node

    def or_(self) -> Node:
        items = [self.and_()]
        while self.at("or"):
            self.take()
            items.append(self.and_())
        return items[0] if len(items) == 1 else BoolOp("or", tuple(items))

    def and_(self) -> Node:
        items = [self.not_()]
        while self.at("and"):
            self.take()
            items.append(self.not_())
        return items[0] if len(items) == 1 else BoolOp("and", tuple(items))

    def not_(self) -> Node:
        if self.at("not"):
            self.nest(self.take())
            node = NotOp(self.not_())
            self.depth -= 1
            return node
        return self.compare()

    def compare(self) -> Node:
        left = self.operand()
        token = self.peek()
        if token is None or token[0] not in ("keyword", "op"):
            return left
        op = token[1]
        if op == "not" and (nxt := self.peek(1)) is not None and nxt[1] == "in":
            self.i += 2
            return Compare("not in", left, self.operand())
        if op not in COMPARISONS:
            return left
        self.take()
        right = self.operand()
        if op == "matches" and isinstance(right, Lit):
            try:
                compile_pattern(str(right.value))
            except PatternError as exc:
                raise ExpressionError(str(exc)) from None
        return Compare(op, left, right)

    def operand(self) -> Node:
        token = self.take()
        kind, text, pos = token
        if kind == "number":
            return Lit(float(text) if "." in text else int(text))
        if kind == "string":
            return Lit(re.sub(r"\\(.)", r"\1", text[1:-1]))
        if kind == "name":
            return Var(tuple(text.split(".")))
        if text in ("true", "false", "null"):
            return Lit({"true": True, "false": False, "null": None}[text])
        if text == "(":
            self.nest(token)
            node = self.or_()
            self.take(")")
            self.depth -= 1
            return node
        if text == "[":
            self.nest(token)
            items: list[Node] = []
            while not self.at("]"):
                items.append(self.operand())
                if not self.at("]"):
                    self.take(",")
            self.take("]")
            self.depth -= 1
            return ListOf(tuple(items))
        raise ExpressionError(f"unexpected {text!r} at column {pos + 1}")


@lru_cache(maxsize=4096)
def parse(source: str) -> Node:
    """Parse once per distinct source (cached); raises ExpressionError."""
    return _Parser(source).parse()


def names(node: Node) -> set[tuple[str, ...]]:
    """Every name the expression reads."""
    if isinstance(node, Var):
        return {node.path}
    if isinstance(node, ListOf | BoolOp):
        return set().union(*(names(x) for x in node.items))
    if isinstance(node, NotOp):
        return names(node.item)
    if isinstance(node, Compare):
        return names(node.left) | names(node.right)
    return set()


Resolver = Callable[[tuple[str, ...]], Any]


def evaluate(node: Node, resolve: Resolver) -> Any:
    if isinstance(node, Lit):
        return node.value
    if isinstance(node, Var):
        return resolve(node.path)
    if isinstance(node, ListOf):
        return [evaluate(x, resolve) for x in node.items]
    if isinstance(node, BoolOp):
        if node.op == "and":
            return all(truthy(evaluate(x, resolve)) for x in node.items)
        return any(truthy(evaluate(x, resolve)) for x in node.items)
    if isinstance(node, NotOp):
        return not truthy(evaluate(node.item, resolve))
    return compare(node.op, evaluate(node.left, resolve), evaluate(node.right, resolve))


def truthy(value: Any) -> bool:
    return bool(value) and value not in ("false", "0")


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value.strip())
        except ValueError:
            return None
    return None


def compare(op: str, left: Any, right: Any) -> bool:
    if op in ("==", "!="):
        a, b = _number(left), _number(right)
        equal = a == b if a is not None and b is not None else left == right
        return equal if op == "==" else not equal
    if op in ("<", "<=", ">", ">="):
        a, b = _number(left), _number(right)
        if a is None or b is None:
            if not (isinstance(left, str) and isinstance(right, str)):
                return False
            a, b = left, right  # type: ignore[assignment]
        return {"<": a < b, "<=": a <= b, ">": a > b, ">=": a >= b}[op]  # type: ignore[operator]
    if op in ("in", "not in"):
        found = _contains(right, left)
        return found if op == "in" else not found
    if op == "contains":
        return _contains(left, right)
    if op == "startswith":
        return isinstance(left, str) and isinstance(right, str) and fold(left).startswith(fold(right))
    if op == "matches":
        if not isinstance(left, str):
            return False
        try:
            return compile_pattern(str(right)).search(left)
        except PatternError as exc:  # a pattern from a variable: the condition node's error
            raise ExpressionError(str(exc)) from None
    raise ExpressionError(f"unknown operator {op}")


def _contains(container: Any, item: Any) -> bool:
    if isinstance(container, str):
        return isinstance(item, str) and fold(item) in fold(container)
    if isinstance(container, list | tuple | set | frozenset):
        return any(compare("==", x, item) for x in container)
    if isinstance(container, dict):
        return item in container
    return False
