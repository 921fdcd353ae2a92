"""The end-to-end benchmark (make bench-e2e): the engine against the bare pipeline, in one run.

    .venv/bin/python -m tests.bench.bench_e2e
    BENCH_REPS=5 BENCH_MESSAGES=10000 BENCH_RATE=150 BENCH_RATE_SECONDS=60 make bench-e2e   # longer

Starts the engine as separate processes (`engine serve`, one `engine worker`, one `engine sender`)
with a benchmark tenant (one Telegram channel, 100 routing rules a typical message does not match, a
5-node default flow that sends one reply per message), and the bare pipeline (tests/bench/
bare_pipeline.py: receiver + consumer). The load tester's sink plays the platforms' send APIs, so
every reply is matched to its webhook. Each repetition drives:

  1. the engine, closed loop (BENCH_CONNECTIONS connections, BENCH_MESSAGES Telegram updates):
     replies delivered per second (first request to last reply), latencies, lost, duplicated;
  2. the bare pipeline, closed loop, the same traffic: rows landed per second, lost, duplicated;
  3. the two-hop floor (bare_pipeline.py --replies), closed loop, the same traffic: the engine's shape
     (receiver, queue, consumer + database, queue, sender, platform API) with none of its work. Its
     replies/s over the bare pipeline's rows/s is the best ratio any engine of that shape could reach
     on this machine and stack; the engine's replies/s over it is what the engine's own work costs.
  4. the engine, open loop at BENCH_RATE/s for BENCH_RATE_SECONDS: webhook ack and reply latency.
     BENCH_RATE=half: at half the replies/s of the same repetition's closed loop (the goal's rate).

The three closed loops run back to back, so a ratio's two terms share the machine's state as closely
as they can: on a shared 2-core machine its speed drifts from one minute to the next.

Before the first repetition, a warm-up (BENCH_WARMUP updates, one per chat by default; 0 for none)
runs the engine, the bare pipeline and the floor once, not counted: every measured repetition then
finds the same state (each chat's contact and conversation exist, every pool and queue is open) in
place of the first one alone creating 1,000 contacts and conversations on an idle machine.

Three repetitions (BENCH_REPS); the median and the spread (min-max) of each figure, and the ratio
engine replies/s over bare rows/s. Defaults keep a whole run to about 3 minutes.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import aio_pika
import aiohttp
import asyncpg
import uvloop

from engine.bus.topology import Topology, delete_topology
from engine.crypto import generate_key
from engine.loadtest import report as reports
from engine.loadtest.driver import RunConfig, execute
from engine.loadtest.generate import GenerateOptions, generate
from engine.loadtest.records import Record, read_records, write_records
from engine.loadtest.replay import ReplayOptions
from engine.loadtest.schedule import Options, plan
from engine.loadtest.sink import MatchingRecorder, running_sink
from engine.loadtest.targets import Target, from_tenant_file
from engine.settings import Settings
from engine.store.migrations import migrate
from tests.bench import gc_pauses
from tests.bench.cpu import CpuMeter, broker_pids, rss_mib

REPS = int(os.environ.get("BENCH_REPS", "3"))
MESSAGES = int(os.environ.get("BENCH_MESSAGES", "6000"))
CHATS = int(os.environ.get("BENCH_CHATS", "1000"))
CONNECTIONS = int(os.environ.get("BENCH_CONNECTIONS", "64"))
HALF = os.environ.get("BENCH_RATE") == "half"  # each repetition's open loop at half its closed loop's rate
RATE = 0.0 if HALF else float(os.environ.get("BENCH_RATE", "50"))
OPEN = "open at half max" if HALF else f"open {RATE:g}/s"
RATE_SECONDS = float(os.environ.get("BENCH_RATE_SECONDS", "20"))
DRAIN = float(os.environ.get("BENCH_DRAIN", "60"))
WARMUP = int(os.environ.get("BENCH_WARMUP", str(CHATS)))
# Another checkout of the engine to run instead of this one (its receiver, worker and sender), measured
# with this instrument: how a before/after comparison keeps the load tester the same.
ENGINE_DIR = os.environ.get("BENCH_ENGINE_DIR") or None
# Prometheus metrics of the receiver, worker and sender on this port and the next two (0: none).
METRICS_PORT = int(os.environ.get("BENCH_METRICS_PORT", "0"))
RSS_EVERY = float(os.environ.get("BENCH_RSS_EVERY", "60"))
PROFILE = os.environ.get("BENCH_PROFILE")  # a directory: py-spy profiles of each process, first closed loop
SPY = Path(sys.executable).with_name("py-spy")
GC_HOOK = Path(__file__).parent / "gc_hook"  # its sitecustomize.py installs gc_pauses in each process
PG_ADMIN = os.environ.get("BENCH_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
AMQP_URL = os.environ.get("BENCH_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
BARE_TARGET = Target("telegram", "bare", None, {"secret_token": "bare"})  # the bare receivers take any path
KINDS = ("closed", "open", "bare", "floor")
NO_LIMITS = {"telegram": {"chat_rate": 10_000, "chat_burst": 10_000, "channel_rate": 100_000, "channel_burst": 100_000}}


def tenant_yaml() -> str:
    """One Telegram channel; 100 rules on words a typical message never has; a 5-node default flow
    (set -> condition -> message -> end, with an unreached branch) that replies once per message."""
    lines = [
        "tenant: {slug: bench, name: Bench}",
        "bots:",
        "  - {slug: bot, name: Bench bot, echo: false}",
        "channels:",
        "  - {slug: tg, type: telegram, bot: bot, external_id: bench_bot,",
        '     secrets: {bot_token: "123456:BENCH-TOKEN", secret_token: "bench-telegram-secret"}}',
        "rules:",
    ]
    for i in range(100):
        kind = i % 4
        if kind == 0:
            condition = f'{{contains: ["zebra{i}", "quartz {i}"]}}'
        elif kind == 1:
            condition = f'{{regex: "^xq{i}-[0-9]+$"}}'
        elif kind == 2:
            condition = f'{{payload: "bench-payload-{i}"}}'
        else:
            condition = f'{{all: [{{starts_with: "zz{i}"}}, {{status: bot}}]}}'
        lines.append(f"  - {{name: rule-{i}, priority: {i + 1}, conditions: {condition},")
        lines.append(f'     actions: [{{reply: {{text: "rule {i}"}}}}]}}')
    lines += [
        "flows:",
        "  - bot: bot",
        "    slug: main",
        "    name: Bench flow",
        "    default: true",
        "    nodes:",
        '      - {id: remember, type: set, values: {last: "{{message.text}}"}, next: check}',
        "      - id: check",
        "        type: condition",
        "        branches: [{when: \"last == 'never-sent-by-the-bench'\", next: never}]",
        "        else: answer",
        '      - {id: never, type: message, text: "unreachable", next: done}',
        '      - {id: answer, type: message, text: "Thanks {{contact.name | there}}, noted.", next: done}',
        "      - {id: done, type: end}",
    ]
    return "\n".join(lines) + "\n"


def writeback() -> str:
    """The kernel's writeback settings. With the defaults (10 % of memory, 30 s) tens of MB of dirty
    pages go to the disk at once every 30 s, and here that came with some of the open loop's stalls
    (docs/performance.md, ninth pass)."""
    vm = Path("/proc/sys/vm")
    names = ("dirty_background_bytes", "dirty_background_ratio", "dirty_expire_centisecs")
    values = [f"{n} {(vm / n).read_text().strip()}" if (vm / n).exists() else f"{n} ?" for n in names]
    return "kernel " + ", ".join(values)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Processes:
    """Child processes in sessions of their own, stopped with SIGTERM (then SIGKILL) at the end."""

    def __init__(self) -> None:
        self.procs: list[tuple[str, subprocess.Popen[bytes]]] = []

    def pid(self, name: str) -> int:
        return next(proc.pid for n, proc in self.procs if n == name)

    def pids(self) -> dict[str, int]:
        return {name: proc.pid for name, proc in self.procs}

    def start(self, name: str, command: list[str], env: dict[str, str], cwd: str | None = None) -> None:
        self.procs.append((name, subprocess.Popen(command, env=env, cwd=cwd, start_new_session=True)))

    def check(self) -> None:
        for name, proc in self.procs:
            if proc.poll() is not None:
                raise RuntimeError(f"{name} exited with status {proc.returncode}")

    def stop(self) -> None:
        for _, proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for _, proc in self.procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


async def sample_rss(procs: Processes, timeline: list[str]) -> None:
    while True:
        await asyncio.sleep(RSS_EVERY)
        timeline.append("/".join(f"{rss_mib(procs.pid(name)):.0f}" for name in ("receiver", "worker", "sender")))


def profile(procs: Processes, directory: str) -> list[subprocess.Popen[bytes]]:
    """py-spy (pip install py-spy) sampling each engine process and this one, raw (collapsed stacks)."""
    Path(directory).mkdir(parents=True, exist_ok=True)
    pids = {name: procs.pid(name) for name in ("receiver", "worker", "sender")} | {"load-tester": os.getpid()}
    record = [str(SPY), "record", "-r", "100", "-f", "raw", "-p"]
    out = subprocess.DEVNULL
    return [
        subprocess.Popen([*record, str(pid), "-o", f"{directory}/{name}.txt"], stdout=out, stderr=out)
        for name, pid in pids.items()
    ]


async def wait_ready(url: str, procs: Processes, method: str = "GET", limit: float = 60) -> None:
    deadline = time.monotonic() + limit
    async with aiohttp.ClientSession() as http:
        while time.monotonic() < deadline:
            procs.check()
            try:
                async with http.request(method, url) as resp:
                    if resp.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.3)
    raise TimeoutError(f"{url} not ready after {limit} s")


def traffic(seed: int, messages: int, chats: int) -> list[Record]:
    per_chat = max(1, messages // chats)
    options = GenerateOptions(("telegram",), min(chats, messages), per_chat, think=1.0, spread=10.0, buttons=0.0,
                              seed=seed)  # fmt: skip
    buffer = io.BytesIO()
    write_records(buffer, generate(options))
    buffer.seek(0)
    return read_records(buffer)


async def bare_rows(pool: asyncpg.Pool) -> tuple[int, int, float]:
    row = await pool.fetchrow(
        "SELECT count(*) AS n, count(DISTINCT md5(body)) AS d, extract(epoch FROM max(landed_at)) AS last"
        " FROM bare_messages"
    )
    return int(row["n"]), int(row["d"]), float(row["last"] or 0.0)


async def run_bare(url: str, records: list[Record], pool: asyncpg.Pool, meter: CpuMeter) -> dict[str, Any]:
    await pool.execute("TRUNCATE bare_messages")
    before = await meter.sample()
    items = plan(records, {"telegram": BARE_TARGET}, Options())
    config = RunConfig(url, ReplayOptions(connections=CONNECTIONS, retries=3), progress=False)
    started = time.time()
    stats = await execute(items, config, None)
    deadline = time.monotonic() + DRAIN
    while True:
        rows, distinct, last = await bare_rows(pool)
        if rows >= stats.ok or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.1)
    cpu = meter.since(before, await meter.sample())
    report = reports.build(stats, mode="closed", target_rate=None, connections=CONNECTIONS, sink=False)
    window = max(last - started, 1e-9)
    return {"landed_per_s": round(distinct / window, 1), "accepted_per_s": report["rate_achieved"],
            "ack_ms": report["ack_ms"], "lost": stats.ok - distinct, "duplicated": rows - distinct,
            "failed": stats.failed, "cpu_ms_per_message": per_message(cpu, distinct)}  # fmt: skip


def per_message(cpu: dict[str, float], messages: int) -> dict[str, float]:
    """CPU milliseconds per message of each role, and their sum."""
    out = {role: round(seconds * 1000 / max(messages, 1), 3) for role, seconds in cpu.items()}
    out["total"] = round(sum(out.values()), 3)
    return out


async def run_replying(
    url: str,
    items: list[Any],
    recorder: MatchingRecorder,
    replay: ReplayOptions,
    meter: CpuMeter,
    rate: float | None = None,
) -> dict[str, Any]:
    config = RunConfig(url, replay, drain=DRAIN, settle=1.0, progress=False)
    before = await meter.sample()
    stats = await execute(items, config, recorder)
    cpu = meter.since(before, await meter.sample())
    mode = "closed" if replay.connections else "open"
    report = reports.build(stats, mode=mode, target_rate=rate,
                           connections=replay.connections, sink=True)  # fmt: skip
    # window: the run's start and end on time.monotonic(), the clock the GC pause logs use
    return {"replies_per_s": report["replies"]["rate"], "accepted_per_s": report["rate_achieved"],
            "ack_ms": report["ack_ms"], "late_ms": report["late_ms"], "e2e_ms": report["e2e_ms"], "lost": stats.lost,
            "duplicated": stats.duplicated, "failed": stats.failed, "statuses": report["statuses"],
            "cpu_ms_per_message": per_message(cpu, stats.matched),
            "timeline": report["timeline"], "rate": rate,
            "window": (stats.started, stats.started + stats.load_seconds)}  # fmt: skip


def spread(values: list[float]) -> str:
    digits = 3 if max(values, default=0) < 10 else 1
    return f"{statistics.median(values):9.{digits}f}  ({min(values):.{digits}f}-{max(values):.{digits}f})"


def summary(results: list[dict[str, Any]]) -> None:
    def col(path: str) -> list[float]:
        out = []
        for r in results:
            value: Any = r
            for key in path.split("/"):
                value = value[key]
            out.append(float(value))
        return out

    print("\n=== bench-e2e: median (min-max) of", len(results), "repetitions ===")
    rows = [
        ("engine closed loop: replies delivered/s", "closed/replies_per_s"),
        ("engine closed loop: webhooks accepted/s", "closed/accepted_per_s"),
        ("bare pipeline: rows landed/s", "bare/landed_per_s"),
        ("bare pipeline: webhooks accepted/s", "bare/accepted_per_s"),
        ("ratio engine replies/s / bare rows/s", "ratio"),
        ("two-hop floor: replies delivered/s", "floor/replies_per_s"),
        ("ratio floor replies/s / bare rows/s", "floor_ratio"),
        ("ratio engine replies/s / floor replies/s", "engine_of_floor"),
        ("engine closed: ack p50 ms", "closed/ack_ms/p50"),
        ("engine closed: ack p99 ms", "closed/ack_ms/p99"),
        ("engine closed: reply e2e p50 ms", "closed/e2e_ms/p50"),
        ("engine closed: reply e2e p99 ms", "closed/e2e_ms/p99"),
        ("bare closed: ack p50 ms", "bare/ack_ms/p50"),
        ("bare closed: ack p99 ms", "bare/ack_ms/p99"),
        (f"engine {OPEN}: rate /s", "open/rate"),
        (f"engine {OPEN}: replies/s", "open/replies_per_s"),
        (f"engine {OPEN}: ack p50 ms", "open/ack_ms/p50"),
        (f"engine {OPEN}: ack p99 ms", "open/ack_ms/p99"),
        (f"engine {OPEN}: load tester late p99 ms", "open/late_ms/p99"),
        (f"engine {OPEN}: e2e p50 ms", "open/e2e_ms/p50"),
        (f"engine {OPEN}: e2e p90 ms", "open/e2e_ms/p90"),
        (f"engine {OPEN}: e2e p99 ms", "open/e2e_ms/p99"),
        (f"engine {OPEN}: e2e p99.9 ms", "open/e2e_ms/p99.9"),
    ]
    for label, path in rows:
        print(f"  {label:<42} {spread(col(path))}")
    lost = sum(r[k]["lost"] for r in results for k in KINDS)
    dup = sum(r[k]["duplicated"] for r in results for k in KINDS)
    failed = sum(r[k]["failed"] for r in results for k in KINDS)
    print(f"  lost {lost}, duplicated {dup}, failed requests {failed} (all runs: engine, bare and floor)")
    print("\nCPU ms per message, per process (median of the repetitions; RabbitMQ is the whole shared broker)")
    for kind, label in (("closed", "engine closed loop, per reply"), ("open", f"engine {OPEN}, per reply"),
                        ("floor", "two-hop floor, per reply"), ("bare", "bare pipeline, per row")):  # fmt: skip
        print(f"  {label}:")
        for role in results[0][kind]["cpu_ms_per_message"]:
            print(f"    {role:<16} {spread(col(f'{kind}/cpu_ms_per_message/{role}'))}")
    ratio, floor = statistics.median(col("ratio")), statistics.median(col("floor_ratio"))
    print(
        f"\nRATIO engine/bare (replies delivered/s over rows landed/s, median): {ratio:.3f}"
        f"  (the two-hop floor's: {floor:.3f})"
    )


async def bench(
    tenant_file: Path,
    settings: Settings,
    procs: Processes,
    sink_port: int,
    bare_port: int,
    floor_port: int,
    gc_log: str,
) -> list[dict[str, Any]]:
    env = settings.environment()
    env["ENGINE_LOG_LEVEL"] = "WARNING"
    env["BENCH_GC_LOG"] = gc_log  # every process below records its GC pauses (tests/bench/gc_pauses.py)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(GC_HOOK), os.environ.get("PYTHONPATH")]))
    recorder = MatchingRecorder()
    pool = await asyncpg.create_pool(settings.database_url, min_size=1, max_size=2)
    assert pool is not None
    results = []
    try:
        async with running_sink(recorder, "127.0.0.1", sink_port):
            for i, (name, command) in enumerate((("receiver", "serve"), ("worker", "worker"), ("sender", "sender"))):
                own = env | ({"ENGINE_METRICS_PORT": str(METRICS_PORT + i)} if METRICS_PORT else {})
                procs.start(name, [sys.executable, "-m", "workers.cli", command], own, cwd=ENGINE_DIR)
            bare = [sys.executable, "-m", "tests.bench.bare_pipeline"]
            queue = f"{settings.topology_prefix}.bare"
            common = ["--amqp", settings.amqp_url, "--queue", queue, "--dsn", settings.database_url]
            procs.start("bare-receiver", [*bare, "receiver", "--port", str(bare_port), *common], env)
            procs.start("bare-consumer", [*bare, "consumer", *common], env)
            floor = ["--amqp", settings.amqp_url, "--queue", f"{queue}.floor", "--dsn", settings.database_url,
                     "--replies", f"{queue}.floor.out"]  # fmt: skip
            procs.start("floor-receiver", [*bare, "receiver", "--port", str(floor_port), *floor], env)
            procs.start("floor-consumer", [*bare, "consumer", *floor], env)
            procs.start("floor-sender", [*bare, "sender", *floor, "--sink", f"http://127.0.0.1:{sink_port}"], env)
            engine_url = f"http://127.0.0.1:{settings.http_port}"
            await wait_ready(f"{engine_url}/readyz", procs)
            await wait_ready(f"http://127.0.0.1:{bare_port}/x", procs, method="POST")
            await wait_ready(f"http://127.0.0.1:{floor_port}/x", procs, method="POST")
            await asyncio.sleep(3)  # the worker takes its shards within a heartbeat or two

            async def db_pids() -> list[int]:
                rows = await pool.fetch("SELECT pid FROM pg_stat_activity WHERE datname = current_database()")
                return [int(r["pid"]) for r in rows]

            tester, broker = [os.getpid()], broker_pids()
            engine = CpuMeter({"receiver": [procs.pid("receiver")], "worker": [procs.pid("worker")],
                               "sender": [procs.pid("sender")], "load tester": tester, "rabbitmq": broker},
                              db_pids)  # fmt: skip
            bare_meter = CpuMeter({"bare receiver": [procs.pid("bare-receiver")],
                                   "bare consumer": [procs.pid("bare-consumer")], "load tester": tester,
                                   "rabbitmq": broker}, db_pids)  # fmt: skip
            floor_meter = CpuMeter({"floor receiver": [procs.pid("floor-receiver")],
                                    "floor consumer": [procs.pid("floor-consumer")],
                                    "floor sender": [procs.pid("floor-sender")], "load tester": tester,
                                    "rabbitmq": broker}, db_pids)  # fmt: skip
            rss = {name: rss_mib(procs.pid(name)) for name in ("receiver", "worker", "sender")}
            timeline: list[str] = []  # RSS every RSS_EVERY seconds, to see it stays flat over a long run
            sampler = asyncio.create_task(sample_rss(procs, timeline))
            autovacuum = await pool.fetchval("SHOW autovacuum")  # off: nothing is vacuumed or analyzed during the run
            print(f"PostgreSQL autovacuum: {autovacuum}; {writeback()}", flush=True)
            targets = from_tenant_file(tenant_file)
            await pool.execute("TRUNCATE bare_messages")
            closed_loop = ReplayOptions(connections=CONNECTIONS, retries=3)

            async def closed_loops(
                records: list[Record], spies: list[subprocess.Popen[bytes]]
            ) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
                """The engine, the bare pipeline and the floor, closed loop on the same traffic, back to
                back; the profiles (spies) cover the engine's loop only."""
                engine_items = plan(records, targets, Options())
                closed = await run_replying(engine_url, engine_items, recorder, closed_loop, engine)
                procs.check()
                for spy in spies:
                    spy.send_signal(signal.SIGINT)  # py-spy writes its profile on SIGINT
                    spy.wait(timeout=60)
                bare = await run_bare(f"http://127.0.0.1:{bare_port}", records, pool, bare_meter)
                procs.check()
                floor_items = plan(records, {"telegram": BARE_TARGET}, Options())
                floor = await run_replying(f"http://127.0.0.1:{floor_port}", floor_items, recorder, closed_loop,
                                           floor_meter)  # fmt: skip
                procs.check()
                return closed, bare, floor

            if WARMUP:
                warm = traffic(seed=0, messages=WARMUP, chats=CHATS)
                engine_warm, bare_warm, floor_warm = await closed_loops(warm, [])
                print(f"warm-up, {len(warm)} updates, not counted: engine {engine_warm['replies_per_s']:.0f} "
                      f"replies/s (lost {engine_warm['lost']}), bare {bare_warm['landed_per_s']:.0f} rows/s, "
                      f"floor {floor_warm['replies_per_s']:.0f} replies/s", flush=True)  # fmt: skip
            for rep in range(REPS):
                records = traffic(seed=rep + 1, messages=MESSAGES, chats=CHATS)
                spies = profile(procs, PROFILE) if PROFILE and rep == 0 else []
                closed, bare_result, floor_result = await closed_loops(records, spies)
                rate = round(closed["replies_per_s"] / 2) if HALF else RATE
                rate_records = traffic(seed=100 + rep, messages=int(rate * RATE_SECONDS), chats=CHATS)
                rate_items = plan(rate_records, targets, Options(rate=rate, duration=RATE_SECONDS))
                opened = await run_replying(engine_url, rate_items, recorder, ReplayOptions(retries=3), engine, rate)
                procs.check()
                landed, floor_rate = bare_result["landed_per_s"], floor_result["replies_per_s"]
                ratio = closed["replies_per_s"] / landed if landed else 0.0
                result = {
                    "closed": closed,
                    "open": opened,
                    "bare": bare_result,
                    "floor": floor_result,
                    "ratio": round(ratio, 4),
                    "floor_ratio": round(floor_rate / landed if landed else 0.0, 4),
                    "engine_of_floor": round(closed["replies_per_s"] / floor_rate if floor_rate else 0.0, 4),
                }
                results.append(result)
                print(f"rep {rep + 1}: engine {closed['replies_per_s']:.0f} replies/s (ack p99 "
                      f"{closed['ack_ms']['p99']:.0f} ms, e2e p99 {closed['e2e_ms']['p99']:.0f} ms, lost "
                      f"{closed['lost']}, dup {closed['duplicated']}); open {rate:g}/s ack p99 {opened['ack_ms']['p99']:.0f} ms (sent late p99 "
                      f"{opened['late_ms']['p99']:.0f}), e2e p50/p99 "
                      f"{opened['e2e_ms']['p50']:.0f}/{opened['e2e_ms']['p99']:.0f} ms (lost {opened['lost']}); "
                      f"bare {bare_result['landed_per_s']:.0f} rows/s (lost {bare_result['lost']}); floor "
                      f"{floor_rate:.0f} replies/s (lost {floor_result['lost']}, dup {floor_result['duplicated']}); "
                      f"ratio {ratio:.3f}", flush=True)  # fmt: skip
            sampler.cancel()
            for name, start in rss.items():
                print(f"RSS {name}: {start:.0f} MiB at start, {rss_mib(procs.pid(name)):.0f} MiB at end")
            if len(timeline) > 1:
                print(f"RSS MiB receiver/worker/sender every {RSS_EVERY:g} s: {', '.join(timeline)}")
    finally:
        await pool.close()
    summary(results)
    return results


async def prepare(settings: Settings, tenant_file: Path) -> None:
    admin = await asyncpg.connect(PG_ADMIN)
    name = settings.database_url.rsplit("/", 1)[1]
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()
    await migrate(settings.database_url)
    from engine.admin.tenant_file import load_bundle, read_bundle
    from engine.crypto import Vault
    from engine.store.pool import create_pool

    pool = await create_pool(settings.database_url)
    try:
        await load_bundle(pool, Vault(settings.master_key), read_bundle(tenant_file))
        await pool.execute("CREATE TABLE bare_messages (body bytea NOT NULL,"
                           " landed_at timestamptz NOT NULL DEFAULT clock_timestamp())")  # fmt: skip
    finally:
        await pool.close()


async def cleanup(settings: Settings) -> None:
    connection = await aio_pika.connect(settings.amqp_url)
    async with connection:
        channel = await connection.channel()
        await delete_topology(channel, Topology.of(settings))
        for queue in ("bare", "bare.floor", "bare.floor.out"):
            await channel.queue_delete(f"{settings.topology_prefix}.{queue}")
    admin = await asyncpg.connect(PG_ADMIN)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{settings.database_url.rsplit("/", 1)[1]}" WITH (FORCE)')
    finally:
        await admin.close()


def main() -> int:
    sink_port, bare_port, floor_port, http_port = free_port(), free_port(), free_port(), free_port()
    sink = f"http://127.0.0.1:{sink_port}"
    prefix = f"bench{uuid.uuid4().hex[:8]}"
    settings = Settings(
        database_url=PG_ADMIN.rsplit("/", 1)[0] + f"/engine_bench_{prefix}",
        amqp_url=AMQP_URL,
        topology_prefix=prefix,
        master_key=generate_key(),
        http_port=http_port,
        telegram_api_base=f"{sink}/telegram",
        graph_api_base=f"{sink}/graph",
        slack_api_base=f"{sink}/slack/api",
        rate_limits=NO_LIMITS,
    )
    if PROFILE and not SPY.exists():
        print(f"BENCH_PROFILE needs py-spy beside this Python: {sys.executable} -m pip install py-spy")
        return 2
    tenant_file = Path(tempfile.gettempdir()) / f"{prefix}-tenant.yaml"
    tenant_file.write_text(tenant_yaml())
    print(f"bench-e2e: {REPS} repetitions; closed loop {MESSAGES} updates x {CONNECTIONS} connections; "
          f"{OPEN} for {RATE_SECONDS:g} s; bare pipeline and two-hop floor with the closed-loop traffic", flush=True)  # fmt: skip
    procs = Processes()
    gc_log = tempfile.mkdtemp(prefix=f"{prefix}-gc-")
    gc_pauses.install(gc_log)
    results: list[dict[str, Any]] = []
    try:
        asyncio.run(prepare(settings, tenant_file))
        # uvloop, as the bare receiver uses: the load tester shares the machine's two cores.
        results = uvloop.run(bench(tenant_file, settings, procs, sink_port, bare_port, floor_port, gc_log))
        if out := os.environ.get("BENCH_JSON"):
            Path(out).write_text(json.dumps(results, indent=2))
        return 0
    finally:
        pids = procs.pids() | {"load tester": os.getpid()}
        procs.stop()
        print("\nCyclic GC over the whole run, per process (wall time, so a pass preempted by others counts)")
        print("\n".join(gc_pauses.summarise(gc_log, pids)))
        if windows := [r["open"]["window"] for r in results]:
            print(f"... of which during the engine's open loops ({OPEN}, {len(windows)} x {RATE_SECONDS:g} s)")
            print("\n".join(gc_pauses.summarise(gc_log, pids, windows)))
        shutil.rmtree(gc_log, ignore_errors=True)
        asyncio.run(cleanup(settings))
        tenant_file.unlink(missing_ok=True)


if __name__ == "__main__":
    sys.exit(main())
