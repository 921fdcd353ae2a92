"""Answering from a bot's FAQ pairs: explicit keywords first, then word-overlap similarity.

Built once per load (FaqIndex.build); best() is pure and cheap: a message is compared only with
the entries that share a word with it.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

from engine.brain.routing.text import phrase, words

# Words that carry no meaning for matching a question (English and Spanish, the example bots').
_STOPWORDS = """
a an and are as at be can could do does did for from have how i in is it me my of on or our please the there
this to was we what when where which who why will with would you your el la los las un una y o de del en que
como por para es mi se
"""
STOPWORDS = frozenset(_STOPWORDS.split())


@dataclass(frozen=True, slots=True)
class FaqEntry:
    question: str
    answer: str
    words: frozenset[str]
    keywords: tuple[str, ...]  # phrases, as " w1 w2 "


@dataclass(frozen=True, slots=True)
class FaqIndex:
    entries: tuple[FaqEntry, ...]
    by_word: dict[str, tuple[int, ...]]

    @classmethod
    def build(cls, pairs: list[tuple[str, str, list[str]]]) -> FaqIndex:
        """pairs: (question, answer, keywords)."""
        entries = []
        by_word: defaultdict[str, list[int]] = defaultdict(list)
        for i, (question, answer, keywords) in enumerate(pairs):
            content = frozenset(w for w in words(question) if w not in STOPWORDS)
            phrases = tuple(f" {phrase(k)} " for k in keywords if phrase(k))
            entries.append(FaqEntry(question, answer, content, phrases))
            for w in content | {p.split()[0] for p in phrases}:
                by_word[w].append(i)
        return cls(tuple(entries), {w: tuple(ix) for w, ix in by_word.items()})

    def best(self, text: str, threshold: float = 0.5) -> tuple[FaqEntry, float] | None:
        """The best entry scoring at least threshold: 1.0 on a keyword, else the Dice coefficient
        of the content words."""
        said = [w for w in words(text) if w not in STOPWORDS]
        if not said:
            return None
        spaced = " " + " ".join(words(text)) + " "
        content = frozenset(said)
        found: tuple[FaqEntry, float] | None = None
        for i in sorted({i for w in content if w in self.by_word for i in self.by_word[w]}):
            entry = self.entries[i]
            if any(k in spaced for k in entry.keywords):
                score = 1.0
            else:
                score = 2 * len(content & entry.words) / (len(content) + len(entry.words) or 1)
            if score >= threshold and (found is None or score > found[1]):
                found = (entry, score)
        return found
