"""The bare pipeline: the least work a webhook-to-database pipeline on this machine can do, as the
ceiling the engine is compared with (docs/loadtest.md, make bench-e2e).

    python -m tests.bench.bare_pipeline receiver --port 8090 --amqp URL --queue bench.bare
    python -m tests.bench.bare_pipeline consumer --amqp URL --queue bench.bare --dsn DSN
    python -m tests.bench.bare_pipeline consumer ... --replies bench.bare.out     # the two-hop floor
    python -m tests.bench.bare_pipeline sender --amqp URL --replies bench.bare.out --sink URL

receiver: aiohttp on uvloop; every POST body is published persistently to one durable queue with a
publisher confirm, then answered 200. Nothing is verified or parsed.
consumer: prefetch 512; batches of up to 500 messages (or 5 ms) go into bare_messages with one
INSERT ... SELECT FROM unnest(...), and are acked (multiple) only after the commit.

The two-hop floor, the same shape as the engine with none of its work: with --replies the consumer
also takes each body's Telegram chat id and, after the commit and before the ack, publishes them
(one persistent message per batch, confirmed) to a second queue; the sender consumes that queue
(prefetch 64) and POSTs one sendMessage per chat id to the fake platform, acking a message once all
of its sends are answered. No signature, routing, flow, ledger, claim, rate limit, retry or per-chat
order.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
from collections.abc import AsyncIterator

import aio_pika
import aiohttp
import asyncpg
import orjson
import uvloop
from aiohttp import web

BATCH, FLUSH_AFTER, PREFETCH, SEND_PREFETCH = 500, 0.005, 512, 64
SEND_URL = "{sink}/telegram/bot123456:BENCH-TOKEN/sendMessage"
CREATE_TABLE = """
CREATE TABLE IF NOT EXISTS bare_messages (
    body       bytea NOT NULL,
    landed_at  timestamptz NOT NULL DEFAULT clock_timestamp()
)
"""
INSERT_BODIES = "INSERT INTO bare_messages (body) SELECT * FROM unnest($1::bytea[])"
CHANNEL = web.AppKey("channel", aio_pika.abc.AbstractChannel)
QUEUE = web.AppKey("queue", str)


async def publish(request: web.Request) -> web.Response:
    body = await request.read()
    message = aio_pika.Message(body, delivery_mode=aio_pika.DeliveryMode.PERSISTENT)
    await request.app[CHANNEL].default_exchange.publish(message, routing_key=request.app[QUEUE])
    return web.Response(text="ok")


def receiver_app(amqp: str, queue: str) -> web.Application:
    app = web.Application(client_max_size=4 * 1024 * 1024)
    app[QUEUE] = queue

    async def broker(app: web.Application) -> AsyncIterator[None]:
        connection = await aio_pika.connect(amqp)
        channel = await connection.channel(publisher_confirms=True)
        await channel.declare_queue(queue, durable=True)
        app[CHANNEL] = channel
        yield
        await connection.close()

    app.cleanup_ctx.append(broker)
    app.router.add_post("/{tail:.*}", publish)
    return app


def chat_id(body: bytes) -> object:
    """A Telegram update's chat id; None for anything else (the readiness probe's empty body)."""
    try:
        return orjson.loads(body)["message"]["chat"]["id"]
    except (orjson.JSONDecodeError, TypeError, KeyError):
        return None


async def consume(amqp: str, queue_name: str, dsn: str, stop: asyncio.Event, replies: str | None = None) -> None:
    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=2)
    assert pool is not None
    await pool.execute(CREATE_TABLE)
    connection = await aio_pika.connect(amqp)
    channel = await connection.channel()
    await channel.set_qos(prefetch_count=PREFETCH)
    queue = await channel.declare_queue(queue_name, durable=True)
    if replies:
        await channel.declare_queue(replies, durable=True)
    pending: list[aio_pika.abc.AbstractIncomingMessage] = []
    arrived = asyncio.Event()

    async def on_message(message: aio_pika.abc.AbstractIncomingMessage) -> None:
        pending.append(message)
        arrived.set()

    await queue.consume(on_message)
    try:
        while not stop.is_set():
            if not pending:
                arrived.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(arrived.wait(), 0.5)
                continue
            await asyncio.sleep(FLUSH_AFTER if len(pending) < BATCH else 0)
            batch, pending[:] = pending[:BATCH], pending[BATCH:]
            await pool.execute(INSERT_BODIES, [m.body for m in batch])
            if replies:  # after the commit, before the ack: a crash resends, never loses
                chats = orjson.dumps([c for m in batch if (c := chat_id(m.body)) is not None])
                reply = aio_pika.Message(chats, delivery_mode=aio_pika.DeliveryMode.PERSISTENT)
                await channel.default_exchange.publish(reply, routing_key=replies)
            await batch[-1].ack(multiple=True)  # after the commit; deliveries are in order
    finally:
        await connection.close()
        await pool.close()


async def send(amqp: str, replies: str, sink: str, stop: asyncio.Event) -> None:
    url = SEND_URL.format(sink=sink)
    connection = await aio_pika.connect(amqp)
    channel = await connection.channel()
    await channel.set_qos(prefetch_count=SEND_PREFETCH)
    queue = await channel.declare_queue(replies, durable=True)
    http = aiohttp.ClientSession(json_serialize=lambda o: orjson.dumps(o).decode())

    async def post(chat: object) -> None:
        async with http.post(url, json={"chat_id": chat, "text": "ok"}) as resp:
            await resp.read()

    async def on_message(message: aio_pika.abc.AbstractIncomingMessage) -> None:
        await asyncio.gather(*(post(chat) for chat in orjson.loads(message.body)))
        await message.ack()

    await queue.consume(on_message)
    try:
        await stop.wait()
    finally:
        await connection.close()
        await http.close()


def main() -> None:
    parser = argparse.ArgumentParser(prog="bare_pipeline")
    parser.add_argument("role", choices=["receiver", "consumer", "sender"])
    parser.add_argument("--amqp", default="amqp://guest:guest@127.0.0.1:5672/")
    parser.add_argument("--queue", default="bench.bare")
    parser.add_argument("--dsn", default="postgresql://postgres@127.0.0.1:5432/engine_bench")
    parser.add_argument("--port", type=int, default=8090)
    parser.add_argument("--replies", help="the two-hop floor: the queue of replies (consumer and sender)")
    parser.add_argument("--sink", default="http://127.0.0.1:8091", help="the fake platforms' base URL (sender)")
    args = parser.parse_args()
    if args.role == "receiver":
        uvloop.install()
        web.run_app(receiver_app(args.amqp, args.queue), host="127.0.0.1", port=args.port, access_log=None, print=None)
        return

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        if args.role == "sender":
            await send(args.amqp, args.replies, args.sink, stop)
        else:
            await consume(args.amqp, args.queue, args.dsn, stop, args.replies)

    uvloop.run(run())


if __name__ == "__main__":
    main()
