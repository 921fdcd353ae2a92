"""`engine workers -n N`: run N worker processes, restart any that dies, stop them all on SIGTERM."""

from __future__ import annotations

import logging
import signal
import subprocess
import sys
import time

from engine.settings import Settings
from workers.runtime import setup_logging

log = logging.getLogger(__name__)


def main(settings: Settings, n: int) -> int:
    setup_logging(settings)
    stopping = False

    def stop(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    command = [sys.executable, "-m", "workers.cli", "worker"]

    def spawn() -> subprocess.Popen[bytes]:
        # A session of its own: a terminal's Ctrl-C reaches only the supervisor, which then stops
        # each worker once (a second signal would make a worker exit without draining).
        return subprocess.Popen(command, start_new_session=True)

    procs = [spawn() for _ in range(n)]
    log.info("supervising %d workers", n)
    while not stopping:
        time.sleep(0.5)
        for i, proc in enumerate(procs):
            if proc.poll() is not None and not stopping:
                log.warning("worker pid %d exited with %s; restarting", proc.pid, proc.returncode)
                procs[i] = spawn()
    for proc in procs:
        proc.send_signal(signal.SIGTERM)
    for proc in procs:
        try:
            proc.wait(timeout=settings.shutdown_grace + 5)
        except subprocess.TimeoutExpired:
            proc.kill()
    return 0
