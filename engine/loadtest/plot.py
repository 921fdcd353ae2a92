"""`--plot report.png`: throughput and latency percentiles over time, and the latency distribution."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only, no display

import matplotlib.pyplot as plt

from engine.loadtest.stats import Latency, Stats

DISTRIBUTION = (0.0, 50.0, 75.0, 90.0, 95.0, 99.0, 99.5, 99.9, 99.95, 99.99)


def _distribution(axis: Any, name: str, latency: Latency) -> None:
    if not latency.count:
        return
    xs = [1 / (1 - p / 100) for p in DISTRIBUTION]  # HDR-style axis: 1, 2, 4, 10, 100, ...
    axis.plot(xs, [latency.percentile(p) for p in DISTRIBUTION], marker="o", label=name)


def save(stats: Stats, report: dict[str, Any], path: Path) -> None:
    seconds = sorted(stats.timeline)
    rows = [stats.timeline[s] for s in seconds]
    figure, (rate, latency, dist) = plt.subplots(3, 1, figsize=(10, 12))
    rate.plot(seconds, [r.ok for r in rows], label="answered 200 /s")
    rate.plot(seconds, [r.replies for r in rows], label="replies /s")
    rate.plot(seconds, [r.errors for r in rows], label="failed /s")
    rate.set_xlabel("seconds")
    rate.set_title("throughput")
    rate.legend()
    for name, series in (("ack", [r.ack for r in rows]), ("e2e", [r.e2e for r in rows])):
        for p in (50, 99):
            values = [h.percentile(p) if h.count else None for h in series]
            latency.plot(seconds, values, label=f"{name} p{p}")
    latency.set_yscale("log")
    latency.set_ylabel("ms")
    latency.set_xlabel("seconds")
    latency.set_title("latency percentiles per second")
    latency.legend()
    _distribution(dist, "webhook ack", stats.ack)
    _distribution(dist, "end to end", stats.e2e)
    dist.set_xscale("log")
    dist.set_yscale("log")
    dist.set_xticks([1 / (1 - p / 100) for p in (50.0, 90.0, 99.0, 99.9, 99.99)])
    dist.set_xticklabels(["p50", "p90", "p99", "p99.9", "p99.99"])
    dist.set_ylabel("ms")
    dist.set_title("latency distribution")
    dist.legend()
    figure.suptitle(f"engine loadtest ({report['mode']} loop): {report['rate_achieved']:.0f} req/s")
    figure.tight_layout()
    figure.savefig(path, dpi=90)
    plt.close(figure)
