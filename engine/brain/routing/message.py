"""What routing looks at for one inbound message, computed once per decision.

Folding and splitting the text happens here once, so each condition is a set lookup or a string
comparison. The tenant-local clock is computed lazily: most decisions never look at it.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from engine.brain.routing.text import WORD, fold, regex_words
from engine.models import Contact, Conversation, InboundEvent


class Message:
    __slots__ = (
        "_regex_words",
        "_regex_words_known",
        "_spaced",
        "attributes",
        "channel_id",
        "channel_type",
        "contact_id",
        "first",
        "is_new",
        "payload",
        "status",
        "text",
        "timestamp",
        "type",
        "word_list",
        "words",
    )

    def __init__(
        self,
        *,
        text: str,
        type: str,
        channel_id: str,
        channel_type: str,
        contact_id: str,
        timestamp: float,
        payload: str | None = None,
        attributes: dict[str, Any] | None = None,
        is_new: bool = False,
        status: str = "bot",
    ) -> None:
        self.text = text
        self.type = type
        self.channel_id = channel_id
        self.channel_type = channel_type
        self.contact_id = contact_id
        self.timestamp = timestamp
        self.payload = payload
        self.attributes = attributes if attributes is not None else {}
        self.is_new = is_new
        self.status = status
        self.word_list: list[str] = WORD.findall(fold(text)) if text else []
        self.words = frozenset(self.word_list)
        self.first = self.word_list[0] if self.word_list else ""
        self._spaced: str | None = None
        self._regex_words: frozenset[str] | None = None
        self._regex_words_known = False

    @classmethod
    def of(cls, event: InboundEvent, conversation: Conversation, contact: Contact) -> Message:
        return cls(
            text=event.text or "",
            type=event.type.value,
            channel_id=event.channel_id,
            channel_type=event.channel_type.value,
            contact_id=contact.id,
            timestamp=event.timestamp,
            payload=event.payload,
            attributes=contact.attributes,
            is_new=conversation.is_new,
            status=conversation.status,
        )

    @property
    def spaced(self) -> str:
        """' w1 w2 w3 ': phrases and prefixes compare as substrings on word boundaries."""
        if self._spaced is None:
            self._spaced = " " + " ".join(self.word_list) + " "
        return self._spaced

    @property
    def regex_words(self) -> frozenset[str] | None:
        """text.regex_words of the text (None: no split is sure, test every regex rule); equal to
        .words for ASCII text (the fast path)."""
        if not self._regex_words_known:
            self._regex_words = self.words if self.text.isascii() else regex_words(self.text)
            self._regex_words_known = True
        return self._regex_words


class LocalClock:
    """(weekday, minute of day) in a time zone, cached per UTC minute: time conditions of many rules
    and many messages in the same minute share one datetime conversion."""

    __slots__ = ("_cache", "zone")

    def __init__(self, zone: str) -> None:
        self.zone = ZoneInfo(zone)
        self._cache: dict[int, tuple[int, int]] = {}

    def at(self, timestamp: float) -> tuple[int, int]:
        minute = int(timestamp // 60)
        hit = self._cache.get(minute)
        if hit is None:
            local = datetime.fromtimestamp(minute * 60, self.zone)
            hit = (local.weekday(), local.hour * 60 + local.minute)
            if len(self._cache) > 64:
                self._cache.clear()
            self._cache[minute] = hit
        return hit


_CLOCKS: dict[str, LocalClock] = {}


def clock(zone: str) -> LocalClock:
    """One shared clock per zone name (zone offsets are whole minutes, so the cache is exact)."""
    found = _CLOCKS.get(zone)
    if found is None:
        found = _CLOCKS[zone] = LocalClock(zone)
    return found
