"""engine.heap: the collector set for long-running processes, and put back after a load test's run."""

from __future__ import annotations

import gc

from engine import heap


def test_frozen_hides_what_is_alive_and_restores_the_collector_after() -> None:
    before = gc.get_threshold()
    assert gc.get_freeze_count() == 0
    alive: list[list[int]] = [[] for _ in range(1000)]  # noqa: F841 (containers the collector tracks, alive through the block)
    with heap.frozen():
        assert gc.get_freeze_count() >= 1000
        assert gc.get_threshold() == heap.THRESHOLDS
    assert gc.get_freeze_count() == 0
    assert gc.get_threshold() == before
