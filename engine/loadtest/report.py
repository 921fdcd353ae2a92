"""The end of a run: a report (dict, JSON-ready), a table, and `--check` thresholds.

A check is a comma-separated list of `<metric><op><value>`, e.g. "e2e_p99<250ms,lost=0,errors<0.1%".
Metrics: ack_p50 ack_p90 ack_p99 ack_p99.9 ack_max, e2e_p50 ... e2e_max (milliseconds; a value may say
us, ms, s), rate and replies_rate (per second), errors (failed / sent, as a fraction or with %),
retries, lost, duplicated, failed. Operators: < <= > >= = == !=. Any failing check makes the exit
code 1 (like k6 thresholds); an invalid expression is a usage error (exit 2).
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from rich.console import Console
from rich.table import Table

from engine.loadtest.stats import PERCENTILES, Stats

EXIT_OK, EXIT_CHECK_FAILED, EXIT_USAGE = 0, 1, 2
OPERATORS: dict[str, Callable[[float, float], bool]] = {
    "<=": operator.le, ">=": operator.ge, "==": operator.eq, "!=": operator.ne,
    "<": operator.lt, ">": operator.gt, "=": operator.eq,
}  # fmt: skip
UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "%": 0.01, "": 1.0}
CHECK = re.compile(r"^\s*([a-z_][a-z0-9_.]*)\s*(<=|>=|==|!=|<|>|=)\s*([0-9]*\.?[0-9]+)\s*(us|ms|s|%)?\s*$")


class CheckError(ValueError):
    """A --check expression that cannot be read; the message quotes it."""


@dataclass(frozen=True, slots=True)
class Check:
    text: str
    metric: str
    op: str
    value: float  # in the metric's own unit (ms for latencies, a fraction for errors)


def parse_checks(text: str) -> list[Check]:
    checks = []
    for part in (p for p in text.split(",") if p.strip()):
        match = CHECK.match(part)
        if match is None:
            raise CheckError(f"--check: cannot read {part.strip()!r} (e.g. e2e_p99<250ms, lost=0, errors<0.1%)")
        metric, op, number, unit = match.group(1), match.group(2), float(match.group(3)), match.group(4) or ""
        if metric not in METRICS:
            raise CheckError(f"--check: unknown metric {metric!r} (one of {', '.join(sorted(METRICS))})")
        is_latency = metric.startswith(("ack_", "e2e_"))
        if unit in ("us", "ms", "s") and not is_latency:
            raise CheckError(f"--check: {metric} is not a time; {part.strip()!r}")
        if unit == "%" and metric != "errors":
            raise CheckError(f"--check: only errors takes a percentage; {part.strip()!r}")
        checks.append(Check(part.strip(), metric, op, number * UNITS[unit]))
    if not checks:
        raise CheckError("--check: no threshold given")
    return checks


def _latency(kind: str, key: str) -> Callable[[dict[str, Any]], float]:
    def read(report: dict[str, Any]) -> float:
        return float(report[f"{kind}_ms"][key])

    return read


def _latency_metrics() -> dict[str, Callable[[dict[str, Any]], float]]:
    keys = [f"p{p:g}" for p in PERCENTILES] + ["max"]
    return {f"{kind}_{key}": _latency(kind, key) for kind in ("ack", "e2e") for key in keys}


METRICS: dict[str, Callable[[dict[str, Any]], float]] = {
    **_latency_metrics(),
    "rate": lambda r: float(r["rate_achieved"]),
    "replies_rate": lambda r: float(r["replies"]["rate"]),
    "errors": lambda r: float(r["error_rate"]),
    "retries": lambda r: float(r["retries"]),
    "lost": lambda r: float(r["replies"]["lost"]),
    "duplicated": lambda r: float(r["replies"]["duplicated"]),
    "failed": lambda r: float(r["requests"]["failed"]),
}


def evaluate(checks: list[Check], report: dict[str, Any]) -> list[tuple[Check, float, bool]]:
    """(check, measured value, passed) for each check."""
    results = []
    for check in checks:
        measured = METRICS[check.metric](report)
        results.append((check, measured, OPERATORS[check.op](measured, check.value)))
    return results


def build(stats: Stats, *, mode: str, target_rate: float | None, connections: int | None, sink: bool) -> dict[str, Any]:
    """The run as a JSON-ready dict (the --json file)."""
    elapsed = stats.load_seconds or 1e-9
    reply_window = stats.last_reply_at or 1e-9
    return {
        "mode": mode,
        "target_rate": target_rate,
        "connections": connections,
        "load_seconds": round(stats.load_seconds, 3),
        "requests": {"planned": stats.planned, "sent": stats.sent, "ok": stats.ok, "failed": stats.failed},
        "rate_achieved": round(stats.ok / elapsed, 2),
        "statuses": dict(sorted(stats.statuses.items())),
        "retries": stats.retries,
        "error_rate": round(stats.failed / stats.sent, 6) if stats.sent else 0.0,
        "ack_ms": stats.ack.summary(),
        "late_ms": stats.late.summary(),
        "e2e_ms": stats.e2e.summary(),
        "e2e_ms_by_platform": {p: h.summary() for p, h in sorted(stats.e2e_by_platform.items())},
        "replies": {
            "measured": sink,
            "expected": stats.expected_replies,
            "matched": stats.matched,
            "lost": stats.lost,
            "duplicated": stats.duplicated,
            "unmatched": stats.unmatched,
            "rate": round(stats.matched / reply_window, 2) if stats.matched else 0.0,
        },
        "timeline": [stats.timeline[s].to_dict(s) for s in sorted(stats.timeline)],
    }


def table(report: dict[str, Any]) -> Table:
    req, replies = report["requests"], report["replies"]
    title = f"closed loop, {report['connections']} connections" if report["mode"] == "closed" else "open loop"
    out = Table(title=f"engine loadtest: {title}", show_header=False, title_justify="left")
    out.add_column("what", style="bold")
    out.add_column("value")
    target = f" (target {report['target_rate']:g}/s)" if report["target_rate"] else ""
    out.add_row("requests", f"{req['sent']} sent, {req['ok']} answered 200, {req['failed']} failed")
    out.add_row("rate achieved", f"{report['rate_achieved']:.1f}/s{target} over {report['load_seconds']:.1f} s")
    out.add_row("statuses", ", ".join(f"{k}: {v}" for k, v in report["statuses"].items()) or "-")
    out.add_row("retries", str(report["retries"]))
    if replies["measured"]:
        out.add_row("replies", f"{replies['matched']} of {replies['expected']} matched, {replies['rate']:.1f}/s")
        unmatched = f" ({replies['unmatched']} unmatched)" if replies["unmatched"] else ""
        out.add_row("lost / duplicated", f"{replies['lost']} / {replies['duplicated']}{unmatched}")
    return out


def latency_table(report: dict[str, Any]) -> Table:
    out = Table(title="latency (ms)", title_justify="left")
    out.add_column("")
    for key in ("p50", "p90", "p99", "p99.9", "max", "count"):
        out.add_column(key, justify="right")
    rows = [
        ("webhook ack", report["ack_ms"]),
        (" of which sent late", report["late_ms"]),  # the load tester's own part; open loop only
        ("end to end", report["e2e_ms"]),
        *((f" e2e {platform}", s) for platform, s in report["e2e_ms_by_platform"].items()),
    ]
    for name, s in rows:
        if s["count"]:  # what was not measured (sent late in closed loop, e2e without a sink) is left out
            out.add_row(name, *(f"{s[k]:.1f}" for k in ("p50", "p90", "p99", "p99.9", "max")), str(s["count"]))
    return out


def print_report(report: dict[str, Any], console: Console, results: list[tuple[Check, float, bool]]) -> None:
    console.print(table(report))
    console.print(latency_table(report))
    for check, measured, passed in results:
        mark = "[green]pass[/green]" if passed else "[red]FAIL[/red]"
        console.print(f"  check {check.text}: {mark} (measured {measured:g})")
