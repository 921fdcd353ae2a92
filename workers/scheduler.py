"""`engine scheduler`: claim due recovery steps and hand them to the senders (engine.recovery.scheduler).
Any number of them may run at once."""

from __future__ import annotations

from engine.recovery.scheduler import Scheduler
from engine.settings import Settings
from workers.runtime import run


def main(settings: Settings) -> None:
    run(Scheduler(settings).run, settings)
