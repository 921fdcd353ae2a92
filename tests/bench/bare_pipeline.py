"""The bare pipeline: the least work a webhook-to-database pipeline on this machine can do, as the
ceiling the engine is compared with (docs/loadtest.md, make bench-e2e).

    python -m tests.bench.bare_pipeline receiver --port 8090 --amqp URL --queue bench.bare
    python -m tests.bench.bare_pipeline consumer --amqp URL --queue bench.bare --dsn DSN

receiver: aiohttp on uvloop; every POST body is published persistently to one durable queue with a
publisher confirm, then answered 200. Nothing is verified or parsed.
consumer: prefetch 512; batches of up to 500 messages (or 5 ms) go into bare_messages with one
INSERT ... SELECT FROM unnest(...), and are acked (multiple) only after the commit.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
from collections.abc import AsyncIterator

import aio_pika
import asyncpg
import uvloop
from aiohttp import web

BATCH, FLUSH_AFTER, PREFETCH = 500, 0.005, 512
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


async def consume(amqp: str, queue_name: str, dsn: str, stop: asyncio.Event) -> None:
    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=2)
    assert pool is not None
    await pool.execute(CREATE_TABLE)
    connection = await aio_pika.connect(amqp)
    channel = await connection.channel()
    await channel.set_qos(prefetch_count=PREFETCH)
    queue = await channel.declare_queue(queue_name, durable=True)
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
            await batch[-1].ack(multiple=True)  # after the commit; deliveries are in order
    finally:
        await connection.close()
        await pool.close()


def main() -> None:
    parser = argparse.ArgumentParser(prog="bare_pipeline")
    parser.add_argument("role", choices=["receiver", "consumer"])
    parser.add_argument("--amqp", default="amqp://guest:guest@127.0.0.1:5672/")
    parser.add_argument("--queue", default="bench.bare")
    parser.add_argument("--dsn", default="postgresql://postgres@127.0.0.1:5432/engine_bench")
    parser.add_argument("--port", type=int, default=8090)
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
        await consume(args.amqp, args.queue, args.dsn, stop)

    uvloop.run(run())


if __name__ == "__main__":
    main()
