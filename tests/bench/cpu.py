"""CPU time per process, from /proc: how much each stage of a pipeline costs per message.

    meter = CpuMeter({"worker": [pid], ...}, db_pids)   # db_pids() -> PostgreSQL backends of the run
    before = await meter.sample()
    ... load ...
    used = meter.since(before, await meter.sample())     # role -> CPU seconds

Linux only (utime + stime of /proc/PID/stat). PostgreSQL is counted as the backends connected to the
run's database (pg_stat_activity), so other databases on the same server are left out; RabbitMQ is
the whole broker (it has no per-vhost split), so other traffic on it shows up there.
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable

TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (0 if it is gone)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / TICK  # fields 14 and 15 of stat(5)


def rss_mib(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def broker_pids() -> list[int]:
    """The RabbitMQ node (beam.smp) on this machine, if it runs here."""
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/comm") as f:
                    if f.read().strip() == "beam.smp":
                        pids.append(int(entry))
            except OSError:
                continue
    return pids


Sample = dict[str, dict[int, float]]


class CpuMeter:
    def __init__(self, roles: dict[str, list[int]], db_pids: Callable[[], Awaitable[list[int]]]) -> None:
        self.roles = roles
        self.db_pids = db_pids

    async def sample(self) -> Sample:
        pids = {**self.roles, "postgresql": await self.db_pids()}
        return {role: {pid: cpu_seconds(pid) for pid in group} for role, group in pids.items()}

    @staticmethod
    def since(before: Sample, after: Sample) -> dict[str, float]:
        """CPU seconds per role between two samples (a backend that connected in between counts whole)."""
        return {
            role: sum(now - before.get(role, {}).get(pid, 0.0) for pid, now in group.items())
            for role, group in after.items()
        }
