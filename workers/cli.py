"""The `engine` command: one CLI, a thin subcommand per process kind or admin task."""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

from engine.settings import Settings


def _migrate(args: argparse.Namespace, settings: Settings) -> int:
    from engine.store.migrations import migrate

    applied = asyncio.run(migrate(settings.database_url))
    print(f"migrations applied: {', '.join(applied) if applied else 'none (up to date)'}")
    return 0


def _serve(args: argparse.Namespace, settings: Settings) -> int:
    from workers import serve

    serve.main(settings)
    return 0


def _worker(args: argparse.Namespace, settings: Settings) -> int:
    from workers import worker

    worker.main(settings)
    return 0


def _workers(args: argparse.Namespace, settings: Settings) -> int:
    from workers import supervisor

    return supervisor.main(settings, args.n)


def _sender(args: argparse.Namespace, settings: Settings) -> int:
    from workers import sender

    sender.main(settings)
    return 0


def _scheduler(args: argparse.Namespace, settings: Settings) -> int:
    from workers import scheduler

    scheduler.main(settings)
    return 0


def _recovery_report(args: argparse.Namespace, settings: Settings) -> int:
    from engine.admin.commands import recovery_report

    return asyncio.run(recovery_report(settings, args.tenant, args.campaign, args.since))


def _fake_platforms(args: argparse.Namespace, settings: Settings) -> int:
    from engine import fake_platforms

    fake_platforms.main(args.host, args.port)
    return 0


def _load(args: argparse.Namespace, settings: Settings) -> int:
    from engine.admin.commands import load

    return asyncio.run(load(settings, Path(args.file), update=args.update))


def _transcript(args: argparse.Namespace, settings: Settings) -> int:
    from engine.admin.commands import print_transcripts

    return asyncio.run(print_transcripts(settings, args.tenant, args.limit))


def _dead_letters(args: argparse.Namespace, settings: Settings) -> int:
    from engine.admin.commands import dead_letters

    return asyncio.run(dead_letters(settings, args.replay, args.limit))


def _conversation(args: argparse.Namespace, settings: Settings) -> int:
    from engine.admin.commands import command_conversation

    return asyncio.run(command_conversation(settings, args.id, args.action))


def _token(args: argparse.Namespace, settings: Settings) -> int:
    import asyncpg

    from engine.admin import tokens
    from engine.store.pool import create_pool

    async def run() -> int:
        pool = await create_pool(settings.database_url, max_size=1)
        try:
            async with pool.acquire() as conn:
                if args.token_command == "create":
                    new = await tokens.create(
                        conn, args.tenant, tokens.parse_scopes(args.scopes), name=args.name,
                        expires_at=tokens.parse_expiry(args.expires),
                    )  # fmt: skip
                    print(new.token)
                    expiry = new.expires_at.isoformat() if new.expires_at else "never"
                    print(f"token {new.id} ({new.prefix}...): scopes {','.join(new.scopes)}, expires {expiry}; "
                          "shown once, only its hash is stored", file=sys.stderr)  # fmt: skip
                elif args.token_command == "list":
                    for r in await tokens.list_tokens(conn, args.tenant):
                        state = "revoked" if r["revoked_at"] else "active"
                        print(
                            f"{r['id']}\t{r['prefix']}\t{r['tenant']}\t{','.join(r['scopes'])}\t{state}\t"
                            f"expires={r['expires_at'] or '-'}\tlast_used={r['last_used_at'] or '-'}\t{r['name']}"
                        )
                else:
                    revoked = await tokens.revoke(conn, args.token)
                    if not revoked:
                        print(f"engine token revoke: no active token {args.token}", file=sys.stderr)
                        return 2
                    print(f"revoked {revoked[0]['id']} ({revoked[0]['prefix']}...)")
        except tokens.TokenError as exc:
            print(f"engine token {args.token_command}: {exc}", file=sys.stderr)
            return 2
        except asyncpg.UndefinedTableError:
            print(f"engine token {args.token_command}: no api_tokens table: run `engine migrate`", file=sys.stderr)
            return 2
        finally:
            await pool.close()
        return 0

    return asyncio.run(run())


def _gen_key(args: argparse.Namespace, settings: Settings) -> int:
    from engine.crypto import generate_key

    print(generate_key())
    return 0


def _rotate_key(args: argparse.Namespace, settings: Settings) -> int:
    from engine.admin.commands import rotate_key

    return asyncio.run(rotate_key(settings))


def _demo(args: argparse.Namespace, settings: Settings) -> int:
    from workers import demo

    return demo.main(settings, keep_running=args.keep_running)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="engine", description="Conversation engine")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("migrate", help="create the database if needed and apply sql/ migrations").set_defaults(
        func=_migrate
    )
    sub.add_parser("serve", help="run the webhook receivers (+ /healthz, /readyz, /metrics)").set_defaults(func=_serve)
    sub.add_parser("worker", help="run one worker process").set_defaults(func=_worker)
    p = sub.add_parser("workers", help="supervise N worker processes (restarts the ones that die)")
    p.add_argument("-n", type=int, default=2, help="number of worker processes (default 2)")
    p.set_defaults(func=_workers)
    sub.add_parser("sender", help="run one outbound sender process").set_defaults(func=_sender)
    sub.add_parser("scheduler", help="run one recovery scheduler (claims due campaign steps)").set_defaults(
        func=_scheduler
    )
    p = sub.add_parser("recovery", help="recovery campaigns")
    rsub = p.add_subparsers(dest="recovery_command", required=True)
    p = rsub.add_parser("report", help="print the recovery funnel per campaign")
    p.add_argument("tenant", help="tenant slug")
    p.add_argument("--campaign", help="only this campaign (slug)")
    p.add_argument("--since", help="YYYY-MM-DD or Nd (days ago; default 30d)")
    p.set_defaults(func=_recovery_report)
    p = sub.add_parser("fake-platforms", help="run the fake platform send APIs (tests, demo, benchmarks)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8081)
    p.set_defaults(func=_fake_platforms)
    p = sub.add_parser("load", help="create a tenant from a YAML or JSON file (--update: update an existing one)")
    p.add_argument("file")
    p.add_argument("--update", action="store_true", help="the file may name a tenant that exists: update it")
    p.set_defaults(func=_load)
    p = sub.add_parser("transcript", help="print recent conversations of a tenant")
    p.add_argument("tenant", help="tenant slug")
    p.add_argument("--limit", type=int, default=20, help="conversations to print (default 20)")
    p.set_defaults(func=_transcript)
    p = sub.add_parser("dead-letters", help="list poison messages set aside (id, origin queue, reason)")
    p.add_argument("--replay", action="store_true", help="publish them back to the queue they came from")
    p.add_argument("--limit", type=int, default=100, help="at most this many (default 100)")
    p.set_defaults(func=_dead_letters)
    p = sub.add_parser("conversation", help="hand a conversation back to the bot (after a handoff), or close it")
    p.add_argument("action", choices=["handback", "close"])
    p.add_argument("id", help="conversation id")
    p.set_defaults(func=_conversation)
    p = sub.add_parser("token", help="admin API tokens: create (shown once), list, revoke")
    tsub = p.add_subparsers(dest="token_command", required=True)
    t = tsub.add_parser("create", help="create a token for a tenant and print it (once)")
    t.add_argument("--tenant", required=True, help="tenant slug")
    t.add_argument("--scopes", default="read", help="comma-separated: read, write, agent (default read)")
    t.add_argument("--expires", help="a duration (30d, 12h, 90m) or an ISO date; default: never")
    t.add_argument("--name", default="", help="a label, shown in lists and audit logs")
    t = tsub.add_parser("list", help="list tokens (prefix, scopes, state; never the token)")
    t.add_argument("--tenant", help="only this tenant's")
    t = tsub.add_parser("revoke", help="revoke a token by id or display prefix")
    t.add_argument("token", help="token id or its 12-character prefix")
    p.set_defaults(func=_token)
    sub.add_parser("gen-key", help="print a new master key for ENGINE_MASTER_KEY").set_defaults(func=_gen_key)
    sub.add_parser("rotate-key", help="re-encrypt every stored credential under the first master key").set_defaults(
        func=_rotate_key
    )
    from engine.loadtest.commands import add_parsers as add_loadtest_parsers

    add_loadtest_parsers(sub)
    p = sub.add_parser("demo", help="run the whole engine against the fake platforms with demo traffic")
    p.add_argument("--keep-running", action="store_true", help="keep the processes up after the demo traffic")
    p.set_defaults(func=_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    settings = Settings()
    try:
        return int(args.func(args, settings) or 0)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
