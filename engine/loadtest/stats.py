"""What a run measured: counts, statuses, HDR latency histograms overall, per platform and per second.

Latencies are recorded in microseconds in HdrHistogram (1 us .. 1 h, 3 significant digits overall,
2 per second of the timeline) and reported in milliseconds.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from hdrh.histogram import HdrHistogram

PERCENTILES = (50.0, 90.0, 99.0, 99.9)
HIGHEST_US = 3_600_000_000


class Latency:
    """An HDR histogram of seconds, summarised in milliseconds."""

    def __init__(self, digits: int = 3) -> None:
        self.histogram = HdrHistogram(1, HIGHEST_US, digits)

    def record(self, seconds: float) -> None:
        self.histogram.record_value(min(max(int(seconds * 1_000_000), 1), HIGHEST_US))

    @property
    def count(self) -> int:
        return int(self.histogram.get_total_count())

    def percentile(self, p: float) -> float:
        """Milliseconds at percentile p (0 when empty)."""
        return self.histogram.get_value_at_percentile(p) / 1000 if self.count else 0.0

    def summary(self) -> dict[str, float]:
        out = {f"p{p:g}": round(self.percentile(p), 3) for p in PERCENTILES}
        out["max"] = round(self.histogram.get_max_value() / 1000, 3) if self.count else 0.0
        out["mean"] = round(self.histogram.get_mean_value() / 1000, 3) if self.count else 0.0
        out["count"] = self.count
        return out


@dataclass(slots=True)
class Second:
    """One second of the run (by due time for requests, arrival time for replies)."""

    sent: int = 0
    ok: int = 0
    errors: int = 0
    replies: int = 0
    ack: Latency = field(default_factory=lambda: Latency(2))
    e2e: Latency = field(default_factory=lambda: Latency(2))

    def to_dict(self, second: int) -> dict[str, Any]:
        return {"second": second, "sent": self.sent, "ok": self.ok, "errors": self.errors, "replies": self.replies,
                "ack_p50": self.ack.percentile(50), "ack_p99": self.ack.percentile(99),
                "e2e_p50": self.e2e.percentile(50), "e2e_p99": self.e2e.percentile(99)}  # fmt: skip


@dataclass(slots=True)
class Stats:
    planned: int = 0
    sent: int = 0  # requests whose first attempt went out
    ok: int = 0  # answered 200 (after retries)
    failed: int = 0  # never answered 200
    retries: int = 0
    statuses: Counter[str] = field(default_factory=Counter)  # every attempt's status, or "error"
    ack: Latency = field(default_factory=Latency)
    # Open loop: how late each request was taken up after its due time, the load tester's own
    # delay (its loop busy, or waiting for a core), which the ack latency includes. Empty in closed loop.
    late: Latency = field(default_factory=Latency)
    e2e: Latency = field(default_factory=Latency)
    e2e_by_platform: dict[str, Latency] = field(default_factory=dict)
    timeline: dict[int, Second] = field(default_factory=dict)
    expected_replies: int = 0
    matched: int = 0
    duplicated: int = 0  # replies beyond what a conversation's requests should cause
    unmatched: int = 0  # replies to chats this run never wrote to
    started: float = 0.0  # the clock's reading at the start (time.monotonic() in a real run)
    load_seconds: float = 0.0  # first send to last answer
    last_reply_at: float = 0.0  # seconds after the start
    lost: int = 0  # set when the run ends: expected replies that never came

    def second(self, at: float) -> Second:
        key = max(int(at), 0)
        bucket = self.timeline.get(key)
        if bucket is None:
            bucket = self.timeline[key] = Second()
        return bucket

    def record_ack(self, due: float, done: float, latency: float) -> None:
        self.ok += 1
        self.ack.record(latency)
        bucket = self.second(due)
        bucket.ok += 1
        bucket.ack.record(latency)

    def record_reply(self, platform: str, at: float, latency: float) -> None:
        self.matched += 1
        self.last_reply_at = max(self.last_reply_at, at)
        self.e2e.record(latency)
        by_platform = self.e2e_by_platform.get(platform)
        if by_platform is None:  # not setdefault: an HDR histogram is too costly to build per reply
            by_platform = self.e2e_by_platform[platform] = Latency()
        by_platform.record(latency)
        bucket = self.second(at)
        bucket.replies += 1
        bucket.e2e.record(latency)
