"""Text normalisation shared by routing, flows and FAQs: case- and accent-insensitive words.

fold() is the key of every keyword comparison: casefold, then drop combining marks after NFKD, so
"Çà VA" and "ca va" compare equal. regex_words() is a different split used only to pre-filter regex
rules (see regex_words.required_words): tenant regexes run on RE2, whose \\w and \\b are ASCII, so
a regex's literal words are found among the text's maximal runs of ASCII word characters, lowered.
"""

from __future__ import annotations

import re
import unicodedata
import zlib

WORD = re.compile(r"\w+")

ASCII_WORD = re.compile(r"[a-z0-9_]+")  # no IGNORECASE: ASCII only
# Characters RE2's (?i) matches against an ASCII letter (Unicode simple case folding; checked over the
# whole BMP by tests/unit/test_routing.py::test_regex_fold_is_sound). RE2 counts them as non-word
# characters for \\b, so no split of a text holding one is sure to contain a regex's literal words.
CASE_TWINS = frozenset({"\u017f", "\u212a"})  # LONG S (s), KELVIN SIGN (k)
_REGEX_FOLD = str.maketrans({chr(c): chr(c + 32) for c in range(ord("A"), ord("Z") + 1)})


def fold(text: str) -> str:
    """Lower case without accents; ASCII takes a fast path (most chat traffic is ASCII)."""
    if text.isascii():
        return text.lower()
    decomposed = unicodedata.normalize("NFKD", text.casefold())
    return "".join(ch for ch in decomposed if not unicodedata.combining(ch))


def words(text: str) -> list[str]:
    """The folded words of a text, in order."""
    return WORD.findall(fold(text))


def phrase(text: str) -> str:
    """A keyword or phrase as the single-spaced sequence of its folded words."""
    return " ".join(words(text))


def regex_fold(text: str) -> str:
    """ASCII letters lowered; every other character as it is."""
    return text.translate(_REGEX_FOLD)


def regex_words(text: str) -> frozenset[str] | None:
    """The maximal runs of ASCII word characters of the text, lowered; None when the text holds a
    character of CASE_TWINS (then every regex rule is a candidate)."""
    if not CASE_TWINS.isdisjoint(text):
        return None
    return frozenset(ASCII_WORD.findall(regex_fold(text)))


def bucket(*parts: str) -> int:
    """A stable bucket in [0, 10000) for sticky splits: crc32, never Python's salted hash()."""
    return zlib.crc32("\x1f".join(parts).encode()) % 10000
