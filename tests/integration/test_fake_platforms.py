"""The fake platform server over HTTP: request recording, the control API and fault injection."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from engine.fake_platforms import RECORDER, Recorder, create_app

Client = TestClient[web.Request, web.Application]


@pytest.fixture
async def client(aiohttp_client: Callable[[web.Application], Awaitable[Client]]) -> Client:
    return await aiohttp_client(create_app())


def recorder(client: Client) -> Recorder:
    return client.app[RECORDER]  # type: ignore[index]


TG = "/telegram/bot123:ABC"
WA_BODY = {"messaging_product": "whatsapp", "to": "16505551234", "type": "text", "text": {"body": "hi"}}
BEARER = {"Authorization": "Bearer token"}
SLACK_HEADERS = {"Authorization": "Bearer xoxb-1", "Content-Type": "application/json; charset=utf-8"}


async def fault(client: Client, **spec: Any) -> None:
    resp = await client.post("/_fake/faults", json=spec)
    assert resp.status == 200, await resp.text()


async def test_telegram_accepts_json_form_and_query(client: Client) -> None:
    json_resp = await client.post(f"{TG}/sendMessage", json={"chat_id": 111, "text": "json"})
    form_resp = await client.post(f"{TG}/sendMessage", data={"chat_id": "111", "text": "form"})
    query_resp = await client.get(f"{TG}/sendMessage", params={"chat_id": "-5", "text": "query"})
    ids = []
    for resp in (json_resp, form_resp, query_resp):
        assert resp.status == 200
        body = await resp.json()
        assert body["ok"] is True
        ids.append(body["result"]["message_id"])
    assert len(set(ids)) == 3
    sent = await (await client.get("/_fake/sent", params={"platform": "telegram", "chat": "111"})).json()
    assert [s["body"]["text"] for s in sent] == ["json", "form"]
    assert all(s["status"] == 200 and s["ok"] for s in sent)
    assert sent[0]["received_at"] <= sent[1]["received_at"]


async def test_telegram_methods_and_errors(client: Client) -> None:
    me = await (await client.post(f"{TG}/getMe")).json()
    assert me["result"]["is_bot"] is True
    hook = await client.post(f"{TG}/setWebhook", json={"url": "https://x/y", "secret_token": "s"})
    assert (await hook.json())["result"] is True
    unknown = await client.post(f"{TG}/noSuchMethod", json={})
    assert unknown.status == 404
    bad_token = await client.post("/telegram/botnope/getMe")
    assert (bad_token.status, (await bad_token.json())["error_code"]) == (401, 401)
    empty = await client.post(f"{TG}/sendMessage", json={"chat_id": 1, "text": ""})
    assert empty.status == 400


async def test_faults_over_http_for_one_chat(client: Client) -> None:
    await fault(client, platform="telegram", chat=111, status=429, retry_after=5, times=2)
    for _ in range(2):
        resp = await client.post(f"{TG}/sendMessage", json={"chat_id": 111, "text": "x"})
        body = await resp.json()
        assert resp.status == 429
        assert body == {
            "ok": False,
            "error_code": 429,
            "description": "Too Many Requests: retry after 5",
            "parameters": {"retry_after": 5},
        }
    other = await client.post(f"{TG}/sendMessage", json={"chat_id": 222, "text": "x"})
    assert other.status == 200  # the fault was for chat 111 only
    third = await client.post(f"{TG}/sendMessage", json={"chat_id": 111, "text": "x"})
    assert third.status == 200  # used up after two
    assert await (await client.get("/_fake/faults")).json() == []


async def test_fault_for_every_platform_and_until_cleared(client: Client) -> None:
    await fault(client, platform="*", status=500, times=None)
    tg = await client.post(f"{TG}/sendMessage", json={"chat_id": 1, "text": "x"})
    wa = await client.post("/graph/PN1/messages", json=WA_BODY, headers=BEARER)
    sl = await client.post("/slack/api/chat.postMessage", json={"channel": "C1", "text": "x"}, headers=SLACK_HEADERS)
    assert (tg.status, wa.status, sl.status) == (500, 500, 500)
    assert (await wa.json())["error"]["is_transient"] is True
    await client.delete("/_fake/faults")
    assert (await client.post(f"{TG}/sendMessage", json={"chat_id": 1, "text": "x"})).status == 200


async def test_graph_429_shapes(client: Client) -> None:
    await fault(client, platform="whatsapp", status=429)
    wa = await client.post("/graph/PN1/messages", json=WA_BODY, headers=BEARER)
    assert wa.status == 429
    assert (await wa.json())["error"]["code"] == 130429
    await fault(client, platform="whatsapp", chat="16505551234", status=400, error_code=131056)
    pair = await client.post("/graph/PN1/messages", json=WA_BODY, headers=BEARER)
    assert (await pair.json())["error"]["code"] == 131056
    ok = await client.post("/graph/PN1/messages", json=WA_BODY, headers=BEARER)
    body = await ok.json()
    assert body["messages"][0]["id"].startswith("wamid.")
    assert body["contacts"] == [{"input": "16505551234", "wa_id": "16505551234"}]


async def test_graph_messenger_and_read_receipts(client: Client) -> None:
    fb = await client.post(
        "/graph/PAGE1/messages",
        json={"recipient": {"id": "PSID"}, "messaging_type": "RESPONSE", "message": {"text": "hi"}},
        headers=BEARER,
    )
    assert (await fb.json())["recipient_id"] == "PSID"
    read = await client.post(
        "/graph/PN1/messages",
        json={"messaging_product": "whatsapp", "status": "read", "message_id": "wamid.X"},
        headers=BEARER,
    )
    assert await read.json() == {"success": True}
    unauth = await client.post("/graph/PN1/messages", json=WA_BODY)
    assert (unauth.status, (await unauth.json())["error"]["code"]) == (401, 190)
    assert [r.platform for r in recorder(client).sent()] == ["messenger", "whatsapp", "whatsapp"]


async def test_slack_shapes(client: Client) -> None:
    await fault(client, platform="slack", status=429, retry_after=3)
    limited = await client.post(
        "/slack/api/chat.postMessage", json={"channel": "C1", "text": "x"}, headers=SLACK_HEADERS
    )
    assert (limited.status, limited.headers["Retry-After"]) == (429, "3")
    ok = await client.post("/slack/api/chat.postMessage", json={"channel": "C1", "text": "x"}, headers=SLACK_HEADERS)
    assert (await ok.json())["ok"] is True
    no_charset = await client.post(
        "/slack/api/chat.postMessage", json={"channel": "C1", "text": "x"}, headers={"Authorization": "Bearer xoxb-1"}
    )
    assert (await no_charset.json())["warning"] == "missing_charset"
    no_auth = await client.post("/slack/api/chat.postMessage", json={"channel": "C1", "text": "x"})
    assert (await no_auth.json()) == {"ok": False, "error": "not_authed"}
    form = await client.post("/slack/api/auth.test", data={"token": "xoxb-1"})
    assert (await form.json())["ok"] is True


async def test_delay_makes_the_platform_slow(client: Client) -> None:
    await fault(client, platform="telegram", delay=0.3)
    pending = asyncio.ensure_future(client.post(f"{TG}/sendMessage", json={"chat_id": 1, "text": "slow"}))
    await asyncio.sleep(0.1)
    (item,) = recorder(client).sent("telegram")
    assert item.status == 0  # received, not yet answered
    resp = await pending
    assert resp.status == 200
    assert item.status == 200


async def test_wait_for_and_reset(client: Client) -> None:
    async def later() -> None:
        await asyncio.sleep(0.05)
        for i in range(3):
            await client.post(f"{TG}/sendMessage", json={"chat_id": 7, "text": str(i)})

    task = asyncio.ensure_future(later())
    async with asyncio.timeout(5):
        found = await recorder(client).wait_for(3, platform="telegram", chat="7", ok=True)
    await task
    assert [r.body["text"] for r in found] == ["0", "1", "2"]
    assert (await client.delete("/_fake/sent")).status == 200
    assert await (await client.get("/_fake/sent")).json() == []


@pytest.mark.parametrize(
    "spec",
    [{"platform": "icq"}, {"platform": "telegram", "colour": "red"}, ["not", "an", "object"]],
)
async def test_bad_fault_specs_are_refused(client: Client, spec: Any) -> None:
    resp = await client.post("/_fake/faults", json=spec)
    assert resp.status == 400
