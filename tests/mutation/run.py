"""`make mutation`: mutation testing of the modules that hold the engine's guarantees.

Each group mutates its modules with mutmut and runs every mutant against a focused selection of
tests (mutmut further narrows it to the tests that reach the mutated function), in a scratch copy
of the tree under build/mutation/<group>, so the working tree is never touched. Prints the score of
each group and every surviving mutant (with `--diff`, its diff).

    python -m tests.mutation.run [GROUP ...] [--diff]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from fnmatch import fnmatch
from pathlib import Path

from engine.store.migrations import migrate
from tests.conftest import _db_url, _drop

ROOT = Path(__file__).resolve().parents[2]
SCRATCH = ROOT / "build" / "mutation"
COPY = ("engine", "workers", "tests", "sql", "examples", "pyproject.toml")


@dataclass(frozen=True)
class Group:
    name: str
    modules: tuple[str, ...]  # files to mutate
    tests: tuple[str, ...]  # the tests that guard them
    only: tuple[str, ...] = ()  # mutant name patterns (module.x_function / module.xǁClassǁmethod), if not all


GROUPS = (
    Group("ratelimit", ("engine/outbound/ratelimit.py",), ("tests/unit/test_ratelimit.py",)),
    Group(
        "verify",
        ("engine/channels/meta.py", "engine/channels/telegram.py", "engine/channels/slack.py"),
        (
            "tests/unit/test_signatures_without_secret.py",
            "tests/unit/test_channel_telegram.py",
            "tests/unit/test_channel_slack.py",
            "tests/unit/test_channel_whatsapp.py",
            "tests/unit/test_channel_messenger.py",
        ),
        only=(
            "engine.channels.meta.x_verify__mutmut_*",
            "engine.channels.meta.x_handshake__mutmut_*",
            "engine.channels.meta.x_signature__mutmut_*",
            "engine.channels.telegram.xǁTelegramChannelǁverify__mutmut_*",
            "engine.channels.slack.xǁSlackChannelǁverify__mutmut_*",
            "engine.channels.slack.x_signature__mutmut_*",
        ),
    ),
    Group(
        "interpreter",
        ("engine/brain/flows/interpreter.py",),
        ("tests/unit/test_flows.py", "tests/unit/test_flow_contracts.py", "tests/integration/test_brain.py"),
    ),
    Group(
        "shards",
        ("engine/bus/shards.py", "engine/store/leases.py"),
        (
            "tests/unit/test_spine_units.py",
            "tests/integration/test_leases.py",
            "tests/integration/test_sharding.py",
            "tests/e2e/test_handover.py",
        ),
    ),
    Group(
        "consumer",
        ("engine/bus/consumer.py",),
        ("tests/integration/test_consumer.py", "tests/e2e/test_handover.py", "tests/e2e/test_handler_raises.py"),
    ),
    Group(
        "flush",
        ("engine/store/messages.py", "engine/worker/batch.py"),
        (
            "tests/unit/test_staging.py",
            "tests/unit/test_flush_rows.py",
            "tests/integration/test_ledger.py",
            "tests/e2e/test_late_duplicate.py",
            "tests/e2e/test_flush_poison.py",
            "tests/e2e/test_ack_after_commit.py",
        ),
        only=(
            "engine.store.messages.x_flush__mutmut_*",
            "engine.store.messages.xǁFlushRowsǁ*",
            "engine.worker.batch.*",
        ),
    ),
)

# The exit code of each mutant's test run, as mutmut records it (mutmut.stats.status_by_exit_code):
# a failing run or a timeout kills the mutant; 0 survives; 5/33 means no selected test reaches it.
KILLED = {1, 3, 36, 24, -24, 152, 255}
SURVIVED = {0}
UNCOVERED = {5, 33}


def prepare(group: Group) -> Path:
    """A fresh copy of the tree with this group's mutmut settings."""
    where = SCRATCH / group.name
    if where.exists():
        shutil.rmtree(where)
    where.mkdir(parents=True)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "mutants")
    for name in COPY:
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(source, where / name, ignore=ignore)
        else:
            shutil.copy2(source, where / name)
    settings = "\n".join(
        [
            "",
            "[tool.mutmut]",
            'source_paths = ["engine"]',
            f"only_mutate = {json.dumps(list(group.modules))}",
            'also_copy = ["workers", "sql", "examples"]',
            f"pytest_add_cli_args_test_selection = {json.dumps(list(group.tests))}",
            'pytest_add_cli_args = ["-p", "no:cacheprovider", "-q", "-x"]',
            # A mutant that hangs is killed at 3x its tests' clean duration (mutmut's default is 15x,
            # which makes every hanging mutant of the consumer cost minutes).
            "timeout_multiplier = 3.0",
            "",
        ]
    )
    with (where / "pyproject.toml").open("a") as f:
        f.write(settings)
    return where


def results(where: Path) -> dict[str, int | None]:
    """Mutant name -> exit code of its test run, from mutmut's metadata files."""
    found: dict[str, int | None] = {}
    for meta in (where / "mutants").rglob("*.meta"):
        data = json.loads(meta.read_text())
        found.update(data.get("exit_code_by_key", {}))
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("groups", nargs="*", help=f"some of: {', '.join(g.name for g in GROUPS)}")
    parser.add_argument("--diff", action="store_true", help="print each survivor's diff")
    parser.add_argument("--jobs", type=int, default=2, help="mutants tested at once (each opens its own connections)")
    args = parser.parse_args()
    chosen = [g for g in GROUPS if not args.groups or g.name in args.groups]
    mutmut = str(Path(sys.executable).with_name("mutmut"))
    summary = []
    # One migrated template database for every mutant's test session, instead of one per session.
    template = f"engine_tpl_mut_{uuid.uuid4().hex[:8]}"
    asyncio.run(migrate(_db_url(template)))
    os.environ["TEST_TEMPLATE_DB"] = template
    try:
        for group in chosen:
            summary.append(run_group(group, mutmut, args.diff, args.jobs))
    finally:
        asyncio.run(_drop(template))
    print("\ngroup         killed/mutants  score   not scored  minutes")
    for name, killed_n, total, score, untested, seconds in summary:
        print(f"{name:<13} {killed_n:>7}/{total:<6}  {score:5.1f} %  {untested:>10}  {seconds / 60:7.1f}")
    return 0


def run_group(group: Group, mutmut: str, diff: bool, jobs: int) -> tuple[str, int, int, float, int, float]:
    """Mutate the group's modules, run mutmut, print the survivors; returns its line of the summary."""
    where = prepare(group)
    started = time.monotonic()
    print(f"== {group.name}: {', '.join(group.modules)}", flush=True)
    with (where / "mutmut.log").open("w") as log:  # its progress spinner, kept out of the report
        command = [mutmut, "run", "--max-children", str(jobs), *group.only]
        subprocess.run(command, cwd=where, check=False, stdout=log, stderr=subprocess.STDOUT)
    codes = {k: c for k, c in results(where).items() if not group.only or any(fnmatch(k, p) for p in group.only)}
    killed = [k for k, c in codes.items() if c in KILLED]
    # A mutant no selected test reaches counts as surviving: nothing would notice it.
    survived = sorted(k for k, c in codes.items() if c in SURVIVED or c in UNCOVERED)
    other = sorted(k for k, c in codes.items() if k not in killed and k not in survived)
    total = len(killed) + len(survived)
    score = 100.0 * len(killed) / total if total else 0.0
    for name in survived:
        print(f"survived{' (no test reaches it)' if codes[name] in UNCOVERED else ''}: {name}")
        if diff:
            subprocess.run([mutmut, "show", name], cwd=where, check=False)
    for name in other:
        print(f"not scored (exit code {codes[name]}): {name}")
    return group.name, len(killed), total, score, len(other), time.monotonic() - started


if __name__ == "__main__":
    raise SystemExit(main())
