"""The cyclic garbage collector, set for a long-running process that answers within milliseconds.

What is alive once a process has started (modules, classes, compiled tenants, pools, a load test's
planned requests) lives as long as the process or the run: `freeze` moves it out of the collector's
sight, so a full collection no longer rescans all of it. Before, the sender ran a full collection
every few seconds under load, each 70-235 ms of wall time on 2 cores, deaf meanwhile.

It also raises the young generation's threshold. CPython collects generation 0 once tracked
allocations outnumber deallocations by 700; every burst of a few webhooks or replies in flight does
that, and what is alive at that moment (the requests still in flight) is promoted and scanned again
by the older generations before it dies. At 50,000 most of it has died first. Measured open loop
at half the maximum (docs/performance.md): the sender's young collections 17.6 s of wall time in 10
minutes -> 0.1 s, its full ones 272 -> 2; the load tester's young ones 1.7 s -> 0.2 s in 2 minutes.
The cost: cyclic garbage waits for at most 50,000 net allocations, a few MiB.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager

THRESHOLDS = (50_000, 20, 20)  # generation 0, then how many collections of each before the next one up


def freeze() -> None:
    """Call once the process has started: collect, freeze what is left, raise the thresholds."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*THRESHOLDS)


@contextmanager
def frozen() -> Iterator[None]:
    """freeze() for the duration of a block (a load test's run), then the collector as it was."""
    thresholds = gc.get_threshold()
    freeze()
    try:
        yield
    finally:
        gc.set_threshold(*thresholds)
        gc.unfreeze()
