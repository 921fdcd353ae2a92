"""The cyclic garbage collector's pauses, per process, for the benchmark: a gc.callbacks hook writes
one line per collection ("generation milliseconds monotonic-end") to BENCH_GC_LOG/<pid>.log, and
`summarise` totals them, over the whole run or within given windows of time.monotonic() (the same
clock in every process on Linux). The engine's processes load the hook through gc_hook/sitecustomize.py
on PYTHONPATH."""

from __future__ import annotations

import atexit
import gc
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any


def install(directory: str) -> None:
    """Record this process's collections from now on."""
    # Line-buffered: a process stopped by a signal it does not handle loses nothing.
    log = open(Path(directory) / f"{os.getpid()}.log", "a", buffering=1)  # noqa: SIM115 (closed at exit)
    started = [0.0]

    def on_collect(phase: str, info: dict[str, Any]) -> None:
        now = time.monotonic()
        if phase == "start":
            started[0] = now
        else:
            log.write(f"{info['generation']} {(now - started[0]) * 1000:.2f} {now:.3f}\n")

    def close() -> None:
        # Collections still run while the interpreter shuts down: stop recording before closing.
        gc.callbacks.remove(on_collect)
        log.close()

    gc.callbacks.append(on_collect)
    atexit.register(close)


def summarise(directory: str, pids: dict[str, int], windows: Sequence[tuple[float, float]] = ()) -> list[str]:
    """One line per process: its full (generation 2) passes, their total and longest wall time, and
    the total of its young passes; only those that ended within `windows`, if any are given."""
    lines = []
    for name, pid in pids.items():
        path = Path(directory) / f"{pid}.log"
        if not path.exists():
            continue
        full: list[float] = []
        young = 0.0
        for row in path.read_text().splitlines():
            generation, ms, at = row.split()
            if windows and not any(start <= float(at) <= end for start, end in windows):
                continue
            if generation == "2":
                full.append(float(ms))
            else:
                young += float(ms)
        longest = max(full, default=0.0)
        lines.append(f"  {name:<16} {len(full):4d} full passes, {sum(full):8.1f} ms in all, longest {longest:6.1f} ms;"
                     f" young passes {young:8.1f} ms in all")  # fmt: skip
    return lines
