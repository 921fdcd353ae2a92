"""Loaded at start-up by every Python process with this directory on PYTHONPATH (the benchmark's
engine processes): records the cyclic GC's pauses when BENCH_GC_LOG names a directory. Loads
tests/bench/gc_pauses.py by its path: the process's own sys.path is not set up yet."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

if os.environ.get("BENCH_GC_LOG"):
    spec = importlib.util.spec_from_file_location("bench_gc_pauses", Path(__file__).parent.parent / "gc_pauses.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.install(os.environ["BENCH_GC_LOG"])
