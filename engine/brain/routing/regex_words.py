"""The words a regex cannot match without: the key that lets the compiler index a regex rule.

For `\\border\\s*#?\\d+` nothing is certain (it matches "order5", whose only word is "order5"), but for
`\\b(?:track|where)\\b.*\\border\\s+\\d+` the text must hold the whole word "order", so the rule only
needs testing for messages with that word. The result is a set S such that any match (on RE2, whose
\\w and \\b are ASCII) implies one word of S among text.regex_words(message); None when no such set
can be proven. The pattern is read with Python's own parser: where RE2's syntax differs (POSIX classes
such as [[:alpha:]], \\pL, \\Q...\\E) the pattern is either refused by that parser or left unindexed.
"""

from __future__ import annotations

import itertools
import re
import warnings
from typing import Any

try:  # Python 3.11+ moved sre_parse here; the old name warns.
    from re import _constants as sre_c  # type: ignore[attr-defined]
    from re import _parser as sre_parse  # type: ignore[attr-defined]
except ImportError:  # pragma: no cover
    import sre_constants as sre_c
    import sre_parse

MAX_ALTERNATIVES = 32
_SEP_AT = {
    sre_c.AT_BOUNDARY,
    sre_c.AT_BEGINNING,
    sre_c.AT_BEGINNING_LINE,
    sre_c.AT_BEGINNING_STRING,
    sre_c.AT_END,
    sre_c.AT_END_LINE,
    sre_c.AT_END_STRING,
}
_NONWORD_CATEGORIES = {sre_c.CATEGORY_SPACE, sre_c.CATEGORY_NOT_WORD}
_REPEATS = {sre_c.MAX_REPEAT, sre_c.MIN_REPEAT, getattr(sre_c, "POSSESSIVE_REPEAT", sre_c.MAX_REPEAT)}

SEP = ("sep",)
OTHER = ("other",)
Item = tuple[Any, ...]


class _Unsafe(Exception):
    """ASCII or LOCALE semantics: \\w differs from the tokenizer's, so no word is certain."""


def required_words(pattern: str) -> frozenset[str] | None:
    if "[:" in pattern:  # a POSIX class to RE2, a plain set of characters to Python's parser
        return None
    try:
        with warnings.catch_warnings():  # "possible nested set" and the like: only RE2's reading counts
            warnings.simplefilter("ignore")
            parsed = sre_parse.parse(pattern)
        if parsed.state.flags & (re.ASCII | re.LOCALE):
            return None
        return _required(list(parsed))
    except (_Unsafe, re.error):
        return None


def _required(seq: list[Any], depth: int = 0) -> frozenset[str] | None:
    """A branch splits the sequence into one sequence per alternative (re moves a prefix common to
    all alternatives out of the branch, so `\\bfoo\\b|\\bbar\\b` arrives as `\\b(?:foo\\b|bar\\b)`):
    the words are the union of each alternative's, when every alternative has some."""
    for k, (op, av) in enumerate(seq):
        if op is sre_c.BRANCH and depth < 3 and len(av[1]) <= MAX_ALTERNATIVES:
            found: set[str] = set()
            for alternative in av[1]:
                words = _required(seq[:k] + list(alternative) + seq[k + 1 :], depth + 1)
                if not words:
                    break
                found |= words
            else:
                return frozenset(found)
            break
    return _best_run(_flatten(seq))


def _is_word_char(c: str) -> bool:
    return c.isalnum() or c == "_"


def _literal(code: int) -> Item:
    c = chr(code)
    if c.isascii() and _is_word_char(c):
        return ("lit", frozenset({c.lower()}))
    return OTHER if _is_word_char(c) else SEP


def _flatten(seq: list[Any]) -> list[Item]:
    items: list[Item] = []
    for op, av in seq:
        if op is sre_c.LITERAL:
            items.append(_literal(av))
        elif op is sre_c.AT:
            items.append(SEP if av in _SEP_AT else OTHER)
        elif op is sre_c.IN:
            items.append(_char_class(av))
        elif op in _REPEATS:
            low, _high, sub = av
            inner = _flatten(list(sub))
            items.append(SEP if low >= 1 and inner == [SEP] else OTHER)
        elif op is sre_c.SUBPATTERN:
            _group, add_flags, _del_flags, sub = av
            if add_flags & (re.ASCII | re.LOCALE):
                raise _Unsafe
            items.extend(_flatten(list(sub)))
        elif op is sre_c.BRANCH:
            items.append(_branch(av[1]))
        else:
            items.append(OTHER)
    return items


def _char_class(members: list[Any]) -> Item:
    if all(op is sre_c.LITERAL for op, _ in members):
        chars = [chr(code) for _, code in members]
        if all(c.isascii() and _is_word_char(c) for c in chars):
            return ("lit", frozenset(c.lower() for c in chars))
        if not any(_is_word_char(c) for c in chars):
            return SEP
        return OTHER
    if all(op is sre_c.CATEGORY and av in _NONWORD_CATEGORIES for op, av in members):
        return SEP
    return OTHER


def _branch(alternatives: list[Any]) -> Item:
    """A branch of pure literal words (`refund|return`, after re's common-prefix folding) joins
    the run around it as a set of alternatives; anything else breaks the run."""
    found: set[str] = set()
    for alternative in alternatives:
        items = _flatten(list(alternative))
        if not items or any(item[0] != "lit" for item in items):
            return OTHER
        found |= _expand(items) or set()
        if len(found) > MAX_ALTERNATIVES:
            return OTHER
    return ("lit", frozenset(found))


def _expand(run: list[Item]) -> set[str] | None:
    total = 1
    for item in run:
        total *= len(item[1])
        if total > MAX_ALTERNATIVES:
            return None
    return {"".join(parts) for parts in itertools.product(*(sorted(item[1]) for item in run))}


def _best_run(items: list[Item]) -> frozenset[str] | None:
    """The most selective run of literal word pieces with a separator on both sides."""
    best: set[str] | None = None
    start = 0
    while start < len(items):
        if items[start][0] != "lit" or (start > 0 and items[start - 1] != SEP):
            start += 1
            continue
        end = start
        while end < len(items) and items[end][0] == "lit":
            end += 1
        if start > 0 and end < len(items) and items[end] == SEP:
            words = _expand(items[start:end])
            if words and (best is None or _better(words, best)):
                best = words
        start = end
    return frozenset(best) if best else None


def _better(a: set[str], b: set[str]) -> bool:
    return (len(a), -min(map(len, a))) < (len(b), -min(map(len, b)))
