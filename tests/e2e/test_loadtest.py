"""`engine loadtest` against a running engine: generated traffic on all five platforms, re-signed and
replayed, every reply matched at the sink, nothing lost or duplicated."""

from __future__ import annotations

import io
from pathlib import Path

from engine.loadtest.driver import RunConfig, execute
from engine.loadtest.generate import GenerateOptions, generate
from engine.loadtest.records import read_records, write_records
from engine.loadtest.replay import ReplayOptions
from engine.loadtest.schedule import Options, plan
from engine.loadtest.targets import from_tenant_file
from engine.settings import Settings
from tests.harness import load_tenant
from tests.loadtest_helpers import TENANT, engine_with_sink

PLATFORMS = ("telegram", "whatsapp", "messenger", "instagram", "slack")


def _traffic(conversations: int, messages: int) -> list:  # type: ignore[type-arg]
    options = GenerateOptions(PLATFORMS, conversations, messages, think=0.05, spread=0.5, buttons=0.2, statuses=0.5)
    buffer = io.BytesIO()
    write_records(buffer, generate(options))
    buffer.seek(0)
    return read_records(buffer)


async def test_replay_of_generated_traffic_loses_nothing(settings: Settings, tmp_path: Path) -> None:
    await load_tenant(settings, TENANT)
    tenant_file = tmp_path / "tenant.yaml"
    tenant_file.write_text(TENANT)
    records = _traffic(conversations=12, messages=4)  # 240 messages (+ WhatsApp status callbacks)
    items = plan(records, from_tenant_file(tenant_file), Options(rate=150.0))
    messages = sum(1 for r in records if r.kind in ("message", "button"))
    assert messages == 240
    async with engine_with_sink(settings) as (engine, recorder):
        config = RunConfig(engine.url, ReplayOptions(retries=2, backoff=0.2), drain=60.0, settle=0.5, progress=False)
        stats = await execute(items, config, recorder)
    assert stats.sent == len(records)
    assert (stats.ok, stats.failed, stats.retries) == (len(records), 0, 0), stats.statuses
    assert stats.expected_replies == messages
    assert (stats.matched, stats.lost, stats.duplicated, stats.unmatched) == (messages, 0, 0, 0)
    assert set(stats.e2e_by_platform) == set(PLATFORMS)


async def test_a_second_replay_is_not_deduplicated_and_copies_are_new_people(
    settings: Settings, tmp_path: Path
) -> None:
    await load_tenant(settings, TENANT)
    tenant_file = tmp_path / "tenant.yaml"
    tenant_file.write_text(TENANT)
    records = _traffic(conversations=3, messages=3)
    messages = sum(1 for r in records if r.kind in ("message", "button"))
    targets = from_tenant_file(tenant_file)
    async with engine_with_sink(settings) as (engine, recorder):
        config = RunConfig(engine.url, ReplayOptions(connections=8), drain=60.0, settle=0.5, progress=False)
        first = await execute(plan(records, targets, Options()), config, recorder)
        second = await execute(plan(records, targets, Options(copies=2)), config, recorder)
    assert (first.matched, first.lost) == (messages, 0)
    # The same recording again: fresh ids, so the engine answers every message again, twice over.
    assert (second.matched, second.lost, second.duplicated) == (2 * messages, 0, 0)
