"""When each request is due: the recording's own timing at a speed, or a constant arrival rate.

Pure functions of the records and options (no clock, no I/O), so the plan can be checked on paper.
A copy of a conversation is a conversation of its own with the same relative timing; requests keep
their recorded order within a conversation whatever the mode.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from engine.loadtest.records import Record
from engine.loadtest.rewrite import IdMap, rewrite
from engine.loadtest.targets import Target


@dataclass(frozen=True, slots=True)
class Options:
    speed: float = 1.0  # recorded timing divided by this
    rate: float | None = None  # constant arrival rate (requests/s) instead of the recorded timing
    copies: int = 1
    ramp: float = 0.0  # seconds over which the rate (or the connections) rise linearly from zero
    max_requests: int | None = None
    duration: float | None = None  # requests due later than this are not planned (open loop)
    replies_per_message: int = 1


@dataclass(frozen=True, slots=True)
class Planned:
    seq: int  # global order
    due: float  # seconds after the start of the run
    conversation: str  # unique per copy
    platform: str
    target: Target
    body: bytes
    content_type: str
    reply_chat: str | None
    expect: int  # replies this request should cause (0 for status callbacks and duplicates)


def rate_due(index: int, rate: float, ramp: float) -> float:
    """The due time of the index-th request at `rate`/s, reached linearly over `ramp` seconds:
    during the ramp the count sent by time t is rate * t**2 / (2 * ramp)."""
    ramp_count = rate * ramp / 2
    if ramp > 0 and index < ramp_count:
        return math.sqrt(2 * ramp * index / rate)
    return ramp + (index - ramp_count) / rate if ramp > 0 else index / rate


def expected_replies(kind: str, duplicate: bool, per_message: int) -> int:
    if duplicate or kind in ("status", "other"):
        return 0
    return per_message


def plan(
    records: Sequence[Record], targets: Mapping[str, Target], options: Options, ids: IdMap | None = None
) -> list[Planned]:
    """Rewrite, copy and time every request. Raises RewriteError for a body of the wrong shape."""
    ids = ids or IdMap()
    seen: set[tuple[str, str]] = set()
    items: list[tuple[float, int, int, Planned]] = []
    for copy in range(options.copies):
        for index, record in enumerate(records):
            target = targets[record.platform]
            new = rewrite(record, ids, copy, target.external_id)
            keys = {(record.platform, e) for e in new.event_ids}
            duplicate = bool(keys) and keys <= seen
            seen |= keys
            conversation = f"{record.platform}:{record.conversation}" + (f"#{copy}" if copy else "")
            item = Planned(0, record.t / options.speed, conversation, record.platform, target, new.body,
                           record.content_type, new.reply_chat,
                           expected_replies(new.kind, duplicate, options.replies_per_message))  # fmt: skip
            items.append((record.t, index, copy, item))
    # Copies interleave in time: copy k of a request is due with copy 0 of it.
    items.sort(key=lambda x: (x[0], x[1], x[2]))
    out: list[Planned] = []
    for seq, (_, _, _, item) in enumerate(items):
        due = rate_due(seq, options.rate, options.ramp) if options.rate else item.due
        if options.duration is not None and due > options.duration:
            break
        if options.max_requests is not None and seq >= options.max_requests:
            break
        out.append(_replace(item, seq, due))
    return out


def _replace(item: Planned, seq: int, due: float) -> Planned:
    return Planned(seq, due, item.conversation, item.platform, item.target, item.body, item.content_type,
                   item.reply_chat, item.expect)  # fmt: skip
