"""The `engine loadtest generate | export | run` commands (argument handling, files, exit codes)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import re
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO

import orjson
import uvloop
from rich.console import Console

from engine.admin.environment import TenantEnvironment
from engine.admin.tenant_file import BundleError
from engine.loadtest import report as reports
from engine.loadtest.driver import RunConfig, execute
from engine.loadtest.generate import TEXTS, GenerateOptions, generate
from engine.loadtest.records import PLATFORMS, Record, RecordError, read_records, write_records
from engine.loadtest.replay import ReplayOptions
from engine.loadtest.rewrite import RewriteError
from engine.loadtest.schedule import Options, Planned, plan
from engine.loadtest.sink import MatchingRecorder, running_sink
from engine.loadtest.stats import Stats
from engine.loadtest.targets import Target, TargetError, check, from_secrets_file, from_tenant_file
from engine.settings import Settings

AGO = re.compile(r"^(\d+(?:\.\d+)?)([smhd])$")
SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def _fail(message: str) -> int:
    print(f"engine loadtest: {message}", file=sys.stderr)
    return reports.EXIT_USAGE


@contextlib.contextmanager
def _output(path: str | None) -> Iterator[IO[bytes]]:
    if path in (None, "-"):
        yield sys.stdout.buffer
        sys.stdout.buffer.flush()
    else:
        with open(path, "wb") as stream:
            yield stream


# --- generate ------------------------------------------------------------------------------------


def generate_command(args: argparse.Namespace, settings: Settings) -> int:
    platforms = [p.strip() for p in args.platforms.split(",") if p.strip()]
    if bad := [p for p in platforms if p not in PLATFORMS]:
        return _fail(f"--platforms: unknown {bad} (choose from {', '.join(PLATFORMS)})")
    texts: tuple[str, ...] = TEXTS
    if args.texts:
        try:
            texts = tuple(line.strip() for line in Path(args.texts).read_text().splitlines() if line.strip())
        except (OSError, UnicodeDecodeError) as exc:
            return _fail(f"--texts: {exc}")
        if not texts:
            return _fail(f"--texts: {args.texts} has no lines")
    options = GenerateOptions(platforms, args.conversations, args.messages, args.think, args.spread, args.buttons,
                              args.statuses, texts, args.seed)  # fmt: skip
    with _output(args.output) as stream:
        count = write_records(stream, generate(options))
    print(f"{count} requests written", file=sys.stderr)
    return 0


# --- export --------------------------------------------------------------------------------------


def parse_time(text: str, now: datetime) -> datetime:
    """'2h' / '30m' / '7d' ago, or an ISO 8601 time (UTC unless it says otherwise)."""
    match = AGO.match(text)
    if match:
        return now - timedelta(seconds=float(match.group(1)) * SECONDS[match.group(2)])
    moment = datetime.fromisoformat(text)
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


async def _export(settings: Settings, args: argparse.Namespace, stream: IO[bytes]) -> int:
    from engine.store import webhooks
    from engine.store.pool import create_pool

    now = datetime.now(UTC)
    since, until = parse_time(args.since, now), parse_time(args.until, now) if args.until else now
    outcomes = [o.strip() for o in args.outcome.split(",")] if args.outcome else None
    pool = await create_pool(settings.database_url, max_size=2)
    count, first = 0, None
    try:
        async with pool.acquire() as conn:
            async for hook in webhooks.iter_captured(conn, args.channel, since, until, outcomes, args.limit):
                first = first or hook.received_at
                record = Record(
                    t=(hook.received_at - first).total_seconds(),
                    platform=hook.channel_type,
                    conversation=hook.conversation_key or "-",
                    body=hook.body,
                    content_type=hook.headers.get("Content-Type", "application/json"),
                    channel=hook.channel_id,
                )
                stream.write(record.to_json() + b"\n")
                count += 1
    finally:
        await pool.close()
    return count


def export_command(args: argparse.Namespace, settings: Settings) -> int:
    try:
        parse_time(args.since, datetime.now(UTC))
        if args.until:
            parse_time(args.until, datetime.now(UTC))
    except ValueError:
        return _fail("--since/--until: a duration ago (90s, 30m, 2h, 7d) or an ISO 8601 time")
    with _output(args.output) as stream:
        count = asyncio.run(_export(settings, args, stream))
    print(f"{count} requests exported", file=sys.stderr)
    return 0


# --- run ---------------------------------------------------------------------------------------------


def _targets(args: argparse.Namespace, settings: Settings) -> dict[str, Target]:
    if bool(args.tenant_file) == bool(args.channel_secrets):
        raise TargetError("give one of --tenant-file or --channel-secrets")
    if args.tenant_file:
        return from_tenant_file(Path(args.tenant_file), TenantEnvironment.allowing(settings.tenant_env))
    return from_secrets_file(Path(args.channel_secrets))


def _plan(args: argparse.Namespace, settings: Settings) -> list[Planned]:
    """Read the traffic and the targets and plan every request; raises the commands' input errors."""
    if args.speed <= 0 or (args.rate is not None and args.rate <= 0) or args.copies < 1:
        raise TargetError("--speed and --rate must be > 0, --copies >= 1")
    if args.connections is not None and (args.connections < 1 or args.rate is not None or args.speed != 1.0):
        raise TargetError("--connections N (closed loop) sends as fast as answers come: no --rate or --speed with it")
    with open(args.traffic, "rb") as stream:
        records = read_records(stream)
    targets = _targets(args, settings)
    check(targets, {r.platform for r in records})
    options = Options(speed=args.speed, rate=args.rate, copies=args.copies, ramp=args.ramp,
                      max_requests=args.max_requests, duration=None if args.connections else args.duration,
                      replies_per_message=args.replies_per_message)  # fmt: skip
    return plan(records, targets, options)


async def _replay(args: argparse.Namespace, items: list[Planned], console: Console) -> Stats:
    replay = ReplayOptions(connections=args.connections, retries=args.retries, backoff=args.backoff,
                           ramp=args.ramp if args.connections else 0.0,
                           duration=args.duration if args.connections else None)  # fmt: skip
    config = RunConfig(args.target, replay, timeout=args.timeout, drain=args.drain, progress=not args.quiet)
    if args.no_sink:
        return await execute(items, config, None, console)
    recorder = MatchingRecorder()
    async with running_sink(recorder, args.sink_host, args.sink_port) as url:
        console.print(f"sink (fake platform APIs) at {url}: the target's ENGINE_*_API_BASE must point here")
        return await execute(items, config, recorder, console)


def run_command(args: argparse.Namespace, settings: Settings) -> int:
    console = Console(stderr=True)
    try:
        checks = reports.parse_checks(args.check) if args.check else []
        items = _plan(args, settings)
    except (reports.CheckError, TargetError, RecordError, RewriteError, BundleError, OSError) as exc:
        return _fail(str(exc))
    if not items:
        return _fail(f"{args.traffic}: no request to send")
    stats = uvloop.run(_replay(args, items, console))  # a faster client leaves more CPU to the target
    mode = "closed" if args.connections else "open"
    report = reports.build(stats, mode=mode, target_rate=args.rate, connections=args.connections,
                           sink=not args.no_sink)  # fmt: skip
    results = reports.evaluate(checks, report)
    reports.print_report(report, Console(), results)
    if args.json:
        Path(args.json).write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2))
    if args.plot:
        from engine.loadtest import plot

        plot.save(stats, report, Path(args.plot))
    return reports.EXIT_CHECK_FAILED if any(not passed for _, _, passed in results) else reports.EXIT_OK


def add_parsers(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """`engine loadtest ...`: registered by the CLI."""
    group = sub.add_parser("loadtest", help="generate, export and replay platform webhook traffic, and measure it")
    commands = group.add_subparsers(dest="loadtest_command", required=True)

    p = commands.add_parser("generate", help="write synthetic conversations as a traffic file (ndjson)")
    p.add_argument("--platforms", default="telegram", help="comma-separated (default telegram)")
    p.add_argument("--conversations", type=int, default=100, help="per platform (default 100)")
    p.add_argument("--messages", type=int, default=5, help="per conversation (default 5)")
    p.add_argument("--think", type=float, default=2.0, help="mean seconds between one person's messages (2)")
    p.add_argument("--spread", type=float, default=10.0, help="conversations start within this many seconds (10)")
    p.add_argument("--buttons", type=float, default=0.15, help="share of messages that are button presses (0.15)")
    p.add_argument(
        "--statuses", type=float, default=1.0, help="WhatsApp: share of messages followed by status callbacks (1.0)"
    )
    p.add_argument("--texts", help="a file of message texts, one per line (default: a built-in mix)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("-o", "--output", help="file to write (default stdout)")
    p.set_defaults(func=generate_command)

    p = commands.add_parser("export", help="write captured webhooks of a channel as a traffic file (ndjson)")
    p.add_argument("--channel", required=True, help="channel id or slug")
    p.add_argument("--since", default="1d", help="a duration ago (30m, 2h, 7d) or an ISO time (default 1d)")
    p.add_argument("--until", help="same forms (default now)")
    p.add_argument("--outcome", default="accepted", help="comma-separated outcomes to keep (default accepted; '' all)")
    p.add_argument("--limit", type=int, default=1_000_000)
    p.add_argument("-o", "--output", help="file to write (default stdout)")
    p.set_defaults(func=export_command)

    p = commands.add_parser("run", help="replay a traffic file against an engine and report")
    p.add_argument("traffic", help="traffic file (ndjson)")
    p.add_argument("--target", required=True, help="the receiver's base URL, e.g. http://127.0.0.1:8080")
    p.add_argument("--tenant-file", help="the target's tenant file: channel ids and secrets to sign with")
    p.add_argument("--channel-secrets", help="YAML/JSON: platform -> {channel_id, external_id, secrets}")
    timing = p.add_mutually_exclusive_group()
    timing.add_argument("--speed", type=float, default=1.0, help="replay the recorded timing this many times faster")
    timing.add_argument("--rate", type=float, help="a constant arrival rate (requests/s) instead")
    p.add_argument("--copies", type=int, default=1, help="play each conversation this many times, as new people")
    p.add_argument("--connections", type=int, help="closed loop with N connections (the maximum rate)")
    p.add_argument("--ramp", type=float, default=0.0, help="seconds to rise to the rate (or all connections)")
    p.add_argument("--duration", type=float, help="stop sending after this many seconds")
    p.add_argument("--max-requests", type=int, help="send at most this many requests")
    p.add_argument("--retries", type=int, default=3, help="retries of a non-200, with back-off (default 3)")
    p.add_argument("--backoff", type=float, default=1.0, help="seconds before the first retry, doubling (1)")
    p.add_argument("--timeout", type=float, default=10.0, help="seconds per attempt (10)")
    p.add_argument("--replies-per-message", type=int, default=1, help="replies each message should cause (1)")
    p.add_argument("--sink-host", default="127.0.0.1")
    p.add_argument("--sink-port", type=int, default=8081, help="the fake platform sink's port (8081)")
    p.add_argument("--no-sink", action="store_true", help="measure webhook acks only (no end-to-end latency)")
    p.add_argument("--drain", type=float, default=30.0, help="seconds to wait for owed replies after the load (30)")
    p.add_argument("--json", help="write the report as JSON here")
    p.add_argument("--plot", help="write throughput and latency plots here (PNG)")
    p.add_argument("--check", help='thresholds that set the exit code, e.g. "e2e_p99<250ms,lost=0,errors<0.1%%"')
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run_command)
