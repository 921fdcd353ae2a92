"""Text normalisation shared by routing, flows and FAQs: case- and accent-insensitive words.

fold() is the key of every keyword comparison: casefold, then drop combining marks after NFKD, so
"Çà VA" and "ca va" compare equal. regex_fold() is a different, character-wise fold used only to
pre-filter regex rules (see compiler.regex_words): it must never turn a text a regex matches into one
whose words miss the regex's literal words, so it keeps every character's word-ness and length.
"""

from __future__ import annotations

import re
import unicodedata
import zlib

WORD = re.compile(r"\w+")

# Characters that re.IGNORECASE matches against an ASCII letter although str.lower() does not map
# them to it (checked over the whole BMP by tests/unit/test_routing.py::test_regex_fold_is_sound).
_IGNORECASE_EXTRA = {"\u017f": "s", "\u0131": "i", "\u212a": "k", "\u0130": "i"}
_REGEX_FOLD = str.maketrans({**{chr(c): chr(c + 32) for c in range(ord("A"), ord("Z") + 1)}, **_IGNORECASE_EXTRA})


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
    """ASCII letters lowered, and the few non-ASCII letters IGNORECASE equates with them."""
    return text.translate(_REGEX_FOLD)


def bucket(*parts: str) -> int:
    """A stable bucket in [0, 10000) for sticky splits: crc32, never Python's salted hash()."""
    return zlib.crc32("\x1f".join(parts).encode()) % 10000
