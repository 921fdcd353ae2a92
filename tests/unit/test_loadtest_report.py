"""The report: percentiles of a known histogram, the table, and --check thresholds."""

from __future__ import annotations

import io

import pytest
from rich.console import Console

from engine.loadtest import report as reports
from engine.loadtest.records import Record, parse_record, read_records
from engine.loadtest.stats import Latency, Stats


def test_percentiles_of_a_known_histogram() -> None:
    latency = Latency()
    for ms in range(1, 1001):  # 1 ms .. 1000 ms, once each
        latency.record(ms / 1000)
    summary = latency.summary()
    # HDR with 3 significant digits: within 0.1 % of the exact order statistic.
    assert summary["p50"] == pytest.approx(500, rel=1e-3)
    assert summary["p90"] == pytest.approx(900, rel=1e-3)
    assert summary["p99"] == pytest.approx(990, rel=1e-3)
    assert summary["p99.9"] == pytest.approx(999, rel=1e-3)
    assert summary["max"] == pytest.approx(1000, rel=1e-3)
    assert summary["mean"] == pytest.approx(500.5, rel=1e-3)
    assert summary["count"] == 1000


def test_a_skewed_histogram_keeps_its_tail() -> None:
    latency = Latency()
    for _ in range(990):
        latency.record(0.010)
    for _ in range(10):
        latency.record(2.0)
    assert latency.percentile(99) == pytest.approx(10, rel=1e-3)
    assert latency.percentile(99.9) == pytest.approx(2000, rel=1e-3)


def _report(**overrides: int) -> dict[str, object]:
    stats = Stats(planned=1000, sent=1000, ok=999, failed=1, retries=4, expected_replies=999, matched=999)
    stats.load_seconds = 10.0
    stats.last_reply_at = 10.0
    for ms in range(1, 1001):
        stats.ack.record(ms / 10_000)  # 0.1 .. 100 ms
        stats.e2e.record(ms / 1000)  # 1 .. 1000 ms
    for key, value in overrides.items():
        setattr(stats, key, value)
    return reports.build(stats, mode="open", target_rate=100.0, connections=None, sink=True)


def test_checks_pass_and_fail_on_the_measured_values() -> None:
    report = _report()
    results = reports.evaluate(
        reports.parse_checks("e2e_p99<1s, e2e_p50<=500.5ms, lost=0, errors<0.2%, rate>99"), report
    )
    assert [passed for _, _, passed in results] == [True, True, True, True, True]
    results = reports.evaluate(reports.parse_checks("e2e_p99<250ms,lost=0,errors<0.1%,duplicated=0"), report)
    assert [(c.metric, passed) for c, _, passed in results] == [
        ("e2e_p99", False), ("lost", True), ("errors", False), ("duplicated", True)
    ]  # fmt: skip
    assert reports.evaluate(reports.parse_checks("lost=0"), _report(lost=3))[0][2] is False
    assert reports.evaluate(reports.parse_checks("ack_p99.9<100us"), report)[0][2] is False


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("p99<250ms", "unknown metric 'p99'"),
        ("e2e_p99 250ms", "cannot read"),
        ("lost<1ms", "lost is not a time"),
        ("e2e_p99<5%", "only errors takes a percentage"),
        ("", "no threshold"),
    ],
)
def test_an_unreadable_check_is_a_usage_error(text: str, message: str) -> None:
    with pytest.raises(reports.CheckError, match=message):
        reports.parse_checks(text)


def test_the_table_shows_the_figures() -> None:
    console = Console(file=io.StringIO(), width=140)
    report = _report()
    reports.print_report(report, console, reports.evaluate(reports.parse_checks("lost=0"), report))
    text = console.file.getvalue()  # type: ignore[attr-defined]
    for expected in ("1000 sent, 999 answered 200, 1 failed", "99.9/s (target 100/s)", "999 of 999 matched",
                     "check lost=0: pass"):  # fmt: skip
        assert expected in text


def test_the_latency_table_shows_sent_late_in_open_loop_only() -> None:
    stats = Stats(planned=2, sent=2, ok=2)
    for seconds in (0.001, 0.002):
        stats.ack.record(seconds)
    closed = reports.build(stats, mode="closed", target_rate=None, connections=2, sink=False)
    stats.late.record(0.0005)  # only the open loop records how late it took a request up
    opened = reports.build(stats, mode="open", target_rate=10.0, connections=None, sink=False)

    def rendered(report: dict[str, object]) -> str:
        console = Console(file=io.StringIO(), width=140)
        console.print(reports.latency_table(report))
        return console.file.getvalue()  # type: ignore[attr-defined,no-any-return]

    assert "of which sent late" in rendered(opened)
    assert "of which sent late" not in rendered(closed)


def test_records_round_trip_and_sort_by_time() -> None:
    records = [Record(2.0, "slack", "C1", b"payload=%7B%7D", "application/x-www-form-urlencoded", "button"),
               Record(1.0, "telegram", "5", "{\"text\": \"\u00e9\"}".encode(), channel="abc"),
               Record(0.5, "whatsapp", "7", b"\xff\xfe not utf-8")]  # fmt: skip
    stream = io.BytesIO(b"# a comment\n\n" + b"".join(r.to_json() + b"\n" for r in records))
    assert read_records(stream) == sorted(records, key=lambda r: r.t)
    assert parse_record(b'{"t": 0, "platform": "telegram", "conversation": 42, "body": "{}"}').conversation == "42"
