"""`engine loadtest generate | run` as a user runs them: files, exit codes, --json, --plot, --check.
The target is a stub receiver that answers every webhook with a chosen status."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web

SECRETS = """
telegram: {channel_id: stub-channel, secrets: {secret_token: stub-secret}}
whatsapp: {channel_id: stub-wa, external_id: "100200", secrets: {app_secret: wa-secret}}
"""


async def engine_cli(*args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "workers.cli", "loadtest", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


@pytest.fixture
async def stub() -> AsyncIterator[tuple[str, list[int], list[str]]]:
    """(URL, [status to answer], paths received)."""
    status = [200]
    paths: list[str] = []

    async def answer(request: web.Request) -> web.Response:
        await request.read()
        paths.append(request.path)
        return web.Response(status=status[0], text="ok")

    app = web.Application()
    app.router.add_post("/webhooks/{kind}/{channel}", answer)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    yield f"http://127.0.0.1:{port}", status, paths
    await runner.cleanup()


async def test_generate_then_run_with_json_plot_and_passing_checks(
    stub: tuple[str, list[int], list[str]], tmp_path: Path
) -> None:
    url, _, paths = stub
    traffic, secrets = tmp_path / "traffic.ndjson", tmp_path / "secrets.yaml"
    secrets.write_text(SECRETS)
    code, _, err = await engine_cli("generate", "--platforms", "telegram,whatsapp", "--conversations", "5",
                                    "--messages", "4", "--statuses", "0", "-o", str(traffic))  # fmt: skip
    assert code == 0, err
    assert len(traffic.read_text().splitlines()) == 40
    report, plot = tmp_path / "report.json", tmp_path / "report.png"
    code, out, err = await engine_cli(
        "run", str(traffic), "--target", url, "--channel-secrets", str(secrets), "--rate", "200", "--no-sink",
        "--quiet", "--json", str(report), "--plot", str(plot), "--check", "errors=0,failed=0,ack_p99<10s",
    )  # fmt: skip
    assert code == 0, out + err
    doc = json.loads(report.read_text())
    assert doc["requests"] == {"planned": 40, "sent": 40, "ok": 40, "failed": 0}
    assert doc["statuses"] == {"200": 40}
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(set(paths)) == ["/webhooks/telegram/stub-channel", "/webhooks/whatsapp/stub-wa"]
    assert "check errors=0: pass" in out


async def test_a_failing_check_exits_1_and_retries_are_counted(
    stub: tuple[str, list[int], list[str]], tmp_path: Path
) -> None:
    url, status, paths = stub
    status[0] = 503
    traffic, secrets = tmp_path / "traffic.ndjson", tmp_path / "secrets.yaml"
    secrets.write_text(SECRETS)
    await engine_cli("generate", "--conversations", "2", "--messages", "2", "-o", str(traffic))
    code, out, err = await engine_cli(
        "run", str(traffic), "--target", url, "--channel-secrets", str(secrets), "--speed", "100", "--no-sink",
        "--quiet", "--retries", "2", "--backoff", "0.01", "--check", "errors<0.1%",
    )  # fmt: skip
    assert code == 1, out + err
    assert len(paths) == 4 * 3  # every request: the first attempt and two retries
    assert "check errors<0.1%: FAIL" in out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--check", "p99<1s"], "unknown metric"),
        (["--tenant-file", "x.yaml"], "give one of --tenant-file or --channel-secrets"),
        (["--rate", "0"], "--speed and --rate must be > 0"),
        (["--rate", "10", "--connections", "4"], "no --rate or --speed with it"),
    ],
)
async def test_bad_arguments_exit_2_with_a_clear_message(
    stub: tuple[str, list[int], list[str]], tmp_path: Path, args: list[str], message: str
) -> None:
    url, _, paths = stub
    traffic, secrets = tmp_path / "traffic.ndjson", tmp_path / "secrets.yaml"
    secrets.write_text(SECRETS)
    await engine_cli("generate", "--conversations", "1", "--messages", "1", "-o", str(traffic))
    code, _, err = await engine_cli("run", str(traffic), "--target", url, "--channel-secrets", str(secrets),
                                    "--no-sink", "--quiet", *args)  # fmt: skip
    assert code == 2
    assert message in err
    assert paths == []


async def test_traffic_for_a_platform_the_target_lacks_is_refused(tmp_path: Path) -> None:
    traffic, secrets = tmp_path / "traffic.ndjson", tmp_path / "secrets.yaml"
    secrets.write_text(SECRETS)
    await engine_cli("generate", "--platforms", "slack", "--conversations", "1", "-o", str(traffic))
    code, _, err = await engine_cli("run", str(traffic), "--target", "http://127.0.0.1:9", "--channel-secrets",
                                    str(secrets), "--no-sink")  # fmt: skip
    assert code == 2
    assert "the target has no slack channel" in err
