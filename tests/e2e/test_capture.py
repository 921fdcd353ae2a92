"""Webhook capture: the receiver records raw bodies whose signatures still verify, never a secret,
only when asked, without waiting on the database; export -> replay closes the loop."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import io
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
from prometheus_client import REGISTRY

from engine.ingress.capture import WebhookCapture
from engine.loadtest.driver import RunConfig, execute
from engine.loadtest.records import read_records
from engine.loadtest.replay import ReplayOptions
from engine.loadtest.schedule import Options, plan
from engine.loadtest.targets import from_tenant_file
from engine.models import ChannelInfo, ChannelType
from engine.settings import Settings
from engine.store import webhooks
from tests.harness import count, load_tenant, running_engine, telegram_update, wait_until
from tests.loadtest_helpers import TENANT, engine_with_sink

# Escaped unicode and spacing as Meta sends them: a re-serialised copy would not match the signature.
WHATSAPP_BODY = (
    b'{"object": "whatsapp_business_account", "entry": [{"id": "W", "changes": [{"field": "messages", '
    b'"value": {"messaging_product": "whatsapp", "metadata": {"phone_number_id": "1065400001"}, '
    b'"contacts": [{"profile": {"name": "Zo\\u00eb"}, "wa_id": "4915550001"}], "messages": [{"from": '
    b'"4915550001", "id": "wamid.CAPTURE1", "timestamp": "1700000000", "type": "text", '
    b'"text": {"body": "gr\\u00fc\\u00dfe  "}}]}}]}]}'
)


def _meta_signature(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


async def _post_whatsapp(url: str, engine_http: object, channel: str, body: bytes = WHATSAPP_BODY) -> int:
    headers = {"Content-Type": "application/json", "X-Hub-Signature-256": _meta_signature("wa-app-secret", body)}
    async with engine_http.post(f"{url}/webhooks/whatsapp/{channel}", data=body, headers=headers) as resp:  # type: ignore[attr-defined]
        return resp.status


async def test_capture_stores_raw_bytes_whose_signature_verifies_and_no_secret(
    settings: Settings, pool: asyncpg.Pool
) -> None:
    ids = await load_tenant(settings, TENANT)
    settings = settings.model_copy(update={"capture_webhooks": True})
    async with running_engine(settings, workers=0, senders=0) as engine:
        assert await _post_whatsapp(engine.url, engine.http, ids["wa"]) == 200
        assert await engine.post_telegram(ids["tg"], telegram_update(5, 42, "hi"), secret="tg-load-secret") == 200
        assert await engine.post_telegram(ids["tg"], telegram_update(6, 42, "hi"), secret="wrong") == 401
        await wait_until(lambda: count(pool, "SELECT count(*) FROM channel_webhooks"), timeout=10)
        await wait_until(lambda: _at_least(pool, 3))
    rows = {(r["channel_type"], r["status"]): r for r in await pool.fetch("SELECT * FROM channel_webhooks")}
    wa = rows[("whatsapp", 200)]
    assert bytes(wa["body"]) == WHATSAPP_BODY
    assert hmac.compare_digest(wa["headers"]["X-Hub-Signature-256"], _meta_signature("wa-app-secret", wa["body"]))
    assert (wa["outcome"], wa["events"], wa["conversation_key"]) == ("accepted", 1, "4915550001")
    tg = rows[("telegram", 200)]
    assert tg["conversation_key"] == "42"
    assert rows[("telegram", 401)]["outcome"] == "unauthorized"
    for row in rows.values():
        assert "X-Telegram-Bot-Api-Secret-Token" not in row["headers"]
        assert "tg-load-secret" not in str(row["headers"])
    assert await count(pool, "SELECT count(*) FROM pg_tables WHERE tablename LIKE 'channel_webhooks_2%'") >= 3


async def _at_least(pool: asyncpg.Pool, n: int) -> bool:
    return await count(pool, "SELECT count(*) FROM channel_webhooks") >= n


async def test_capture_is_off_by_default_and_per_channel_when_configured(
    settings: Settings, pool: asyncpg.Pool
) -> None:
    tenant = TENANT.replace(
        'secrets: {bot_token: "123456:LOAD-TOKEN", secret_token: "tg-load-secret"}}',
        'secrets: {bot_token: "123456:LOAD-TOKEN", secret_token: "tg-load-secret"}, config: {capture: true}}',
    )
    ids = await load_tenant(settings, tenant)
    async with running_engine(settings, workers=0, senders=0) as engine:
        assert await _post_whatsapp(engine.url, engine.http, ids["wa"]) == 200
        assert await engine.post_telegram(ids["tg"], telegram_update(7, 43, "hi"), secret="tg-load-secret") == 200
        await wait_until(lambda: _at_least(pool, 1))
        await asyncio.sleep(0.3)
    kinds = [r["channel_type"] for r in await pool.fetch("SELECT channel_type FROM channel_webhooks")]
    assert kinds == ["telegram"]  # WhatsApp has no capture config and the setting is off


async def test_a_full_queue_drops_and_counts_instead_of_waiting(settings: Settings, pool: asyncpg.Pool) -> None:
    settings = settings.model_copy(update={"capture_webhooks": True, "capture_queue": 2})
    capture = WebhookCapture(pool, settings)
    channel = ChannelInfo("3f9e7d4c-1111-4222-8333-944455556666", "3f9e7d4c-1111-4222-8333-944455556667", None,
                          ChannelType.TELEGRAM, None, {})  # fmt: skip
    dropped = REGISTRY.get_sample_value("engine_webhooks_capture_dropped_total") or 0.0
    for i in range(5):  # no await in between: the writer cannot run, so the queue fills up
        assert capture.wants(channel)
        capture.offer(channel, {}, f'{{"update_id": {i}}}'.encode(), 200, [])
    assert (REGISTRY.get_sample_value("engine_webhooks_capture_dropped_total") or 0.0) - dropped == 3
    await capture.close()
    assert await count(pool, "SELECT count(*) FROM channel_webhooks") == 2


async def test_expired_day_partitions_are_dropped(settings: Settings, pool: asyncpg.Pool) -> None:
    await webhooks.ensure_partitions(pool, 1)
    await pool.execute("CREATE TABLE channel_webhooks_20200101 PARTITION OF channel_webhooks"
                       " FOR VALUES FROM ('2020-01-01') TO ('2020-01-02')")  # fmt: skip
    old = datetime(2020, 1, 1, 12, tzinfo=UTC)
    for at in (old, datetime.now(UTC), datetime.now(UTC) - timedelta(days=400)):
        await pool.execute("INSERT INTO channel_webhooks (channel_id, tenant_id, events, received_at)"
                           " VALUES (gen_random_uuid(), gen_random_uuid(), 0, $1)", at)  # fmt: skip
    assert await webhooks.drop_old_partitions(pool, 7) == 1
    assert await count(pool, "SELECT count(*) FROM channel_webhooks") == 1  # today's row only
    assert await count(pool, "SELECT count(*) FROM pg_tables WHERE tablename = 'channel_webhooks_20200101'") == 0


async def test_capture_export_and_replay_against_an_engine(
    settings: Settings, pool: asyncpg.Pool, tmp_path: Path
) -> None:
    """What a user does: capture on one engine, export the channel, replay at 10x: all answered again."""
    ids = await load_tenant(settings, TENANT)
    tenant_file = tmp_path / "tenant.yaml"
    tenant_file.write_text(TENANT)
    async with engine_with_sink(settings, capture_webhooks=True) as (engine, recorder):
        for n in range(6):
            update = telegram_update(100 + n, 500 + n % 3, f"message {n}")
            assert await engine.post_telegram(ids["tg"], update, secret="tg-load-secret") == 200
        await wait_until(lambda: _at_least(pool, 6))
        env = settings.environment()
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "workers.cli", "loadtest", "export", "--channel", "tg", "--since", "10m",
            env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        out, err = await asyncio.wait_for(proc.communicate(), 60)
        assert proc.returncode == 0, err.decode()
        records = read_records(io.BytesIO(out))
        assert [r.conversation for r in records] == [str(500 + n % 3) for n in range(6)]
        items = plan(records, from_tenant_file(tenant_file), Options(speed=10))
        config = RunConfig(engine.url, ReplayOptions(), drain=30.0, settle=0.3, progress=False)
        stats = await execute(items, config, recorder)
    assert (stats.ok, stats.matched, stats.lost, stats.duplicated) == (6, 6, 0, 0)
