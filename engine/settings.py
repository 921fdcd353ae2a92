"""One Settings object, read from ENGINE_* environment variables (and an optional .env) once per
process, then passed down explicitly. Defaults work against PostgreSQL and RabbitMQ on localhost."""

from __future__ import annotations

import json
import os
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from engine.models import ChannelType


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="ENGINE_", env_file=".env", extra="ignore")

    database_url: str = "postgresql://postgres@127.0.0.1:5432/engine"
    amqp_url: str = "amqp://guest:guest@127.0.0.1:5672/"
    # Prefix of every exchange and queue name, so test runs and tenants of a broker never collide.
    topology_prefix: str = "engine"

    # Credentials at rest: Fernet keys, comma-separated; the first encrypts, all decrypt (rotation).
    master_key: str = Field(default="", repr=False)

    http_host: str = "127.0.0.1"
    http_port: int = 8080
    max_body_bytes: int = 4 * 1024 * 1024  # Meta posts up to 3 MB
    publish_timeout: float = 2.5  # seconds to wait for a broker confirm before a 503 (Slack wants an answer in 3 s)
    # A receiver whose shard has no publish in flight waits this long before publishing, so the webhooks
    # of the next few ms share its broker message and confirm. At a moderate rate most webhooks find their
    # shard idle: with the flush interval at 25 ms (now 50), the engine's CPU per reply at 600/s fell 14 % in
    # make bench-e2e (interleaved runs, docs/performance.md), for ~1.5 ms more at the ack's median.
    publish_linger_ms: float = 3.0
    channel_cache_ttl: float = 5.0  # seconds a receiver trusts its cached channel row
    # Receiver limits (engine.ingress.guards; docs/security.md).
    max_inflight: int = 256  # webhook requests handled at once; the next is 503 + Retry-After at once
    body_read_timeout: float = 10.0  # seconds a webhook body may take to arrive (408 after)
    max_events_per_request: int = 1000  # events one body may carry (413 after, nothing enqueued)
    unknown_channel_cache: int = 10_000  # made-up channel ids remembered as misses (LRU; known ones stay)
    metrics_on_webhook_port: bool = False  # also serve /metrics on the public webhook port

    # Shard queues per direction, fixed for the life of a broker's queues (check_shard_count). Four is
    # what a small host does best: with more, a busy second worth of webhooks is spread over more
    # queues, so fewer events share each broker message and the broker, receiver and worker each do
    # more per reply (bench-e2e on 2 cores: 21 % less CPU per reply than with 16). It caps the worker
    # processes at four; set it higher before the first start when more will run.
    shards: int = 4
    prefetch: int = 512
    batch_size: int = 300  # flush when this many messages are staged ...
    # ... or this long after the batch was opened (the previous flush began). Under full load flushes run
    # back to back and this does not bind; an idle worker flushes at once; at a moderate rate it sets how
    # many messages share a flush, a commit and each outbound queue's message. 50 rather than 25 ms: open
    # loop at half the maximum, 12 % less CPU per reply (the sender's 27 %, PostgreSQL's 25 %) and webhook
    # ack p99 51-55 -> 27-34 ms, for ~10 ms more at the reply's median (docs/performance.md).
    flush_interval_ms: float = 50.0
    # Conversations a worker keeps in memory (least recently used beyond it are dropped when idle);
    # each holds its state and up to 64 recent event ids (RECENT_EVENTS), a few KiB to ~10 KiB.
    conversation_cache: int = 100_000
    queue_type: Literal["classic", "quorum"] = "classic"  # quorum: shard, retry and outbound queues replicated
    lease_ttl: float = 10.0  # seconds a silent worker keeps its shards
    heartbeat_interval: float = 2.0
    shutdown_grace: float = 20.0
    max_flow_steps: int = 50

    sender_prefetch: int = 256
    send_attempts: int = 5
    send_timeout: float = 10.0
    requeue_stale_after: float = 60.0  # seconds a queued/sending row waits before it is re-published

    # Recovery campaigns (`engine scheduler`).
    scheduler_batch: int = 100  # due steps claimed per transaction
    scheduler_claim_hold: float = 0.0  # seconds a claim holds its locks before deciding (tests only)
    scheduler_housekeeping: float = 10.0  # seconds between unanswered-conversation scans and funnel refreshes
    marketing_cap_retry: float = 86400.0  # WhatsApp 131049: try a marketing template again after this ...
    marketing_cap_retries: int = 2  # ... at most this many times

    telegram_api_base: str = "https://api.telegram.org"
    graph_api_base: str = "https://graph.facebook.com/v25.0"  # WhatsApp, Messenger, Instagram
    slack_api_base: str = "https://slack.com/api"

    # Where tools may connect besides public addresses (engine.brain.tools.egress): host names or literal
    # addresses, and CIDRs, comma-separated. Loopback, private, link-local (metadata), multicast and
    # reserved addresses are refused otherwise.
    tool_allow_hosts: str = ""
    tool_allow_networks: str = ""

    # Environment variables a tenant file may read (${NAME}, env:NAME): comma-separated names or
    # PREFIX_* patterns; ENGINE_* never (engine.admin.environment).
    tenant_env: str = ""

    # Webhook capture for load testing (docs/loadtest.md): every channel (or the channels whose config
    # says {"capture": true} / {"capture": {"sample": 0.1}}), a sampled share, kept this many days.
    capture_webhooks: bool = False
    capture_sample: float = Field(default=1.0, ge=0.0, le=1.0)
    capture_retention_days: int = Field(default=7, ge=1)
    capture_queue: int = Field(default=10_000, ge=1)  # requests waiting to be written; more are dropped

    # The admin API (/api/v1 on `engine serve`). Its database connections run as the role engine_api
    # under row-level security; api_database_url logs in as a member of that role (default: database_url).
    api_enabled: bool = True
    api_database_url: str = ""
    api_max_body_bytes: int = 1024 * 1024
    api_rate_limit: float = 20.0  # requests per second per token (token bucket) ...
    api_rate_burst: float = 40.0  # ... and its burst

    log_level: str = "INFO"
    metrics_port: int = 0  # every process serves /metrics here when set (on http_host)

    # Outbound rate-limit overrides per channel type (engine.outbound.ratelimit.DEFAULT_LIMITS otherwise), e.g.
    # ENGINE_RATE_LIMITS='{"telegram": {"chat_rate": 1, "chat_burst": 1, "channel_rate": 30, "channel_burst": 30}}'
    rate_limits: dict[str, dict[str, float]] = Field(default_factory=dict)

    def environment(self) -> dict[str, str]:
        """This process's environment with these settings as ENGINE_* variables (and no others),
        for starting `engine ...` subprocesses that must use exactly these settings."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("ENGINE_")}
        for name, value in self.model_dump(mode="json").items():
            env[f"ENGINE_{name.upper()}"] = value if isinstance(value, str) else json.dumps(value)
        return env

    def api_base(self, channel_type: ChannelType) -> str:
        if channel_type is ChannelType.TELEGRAM:
            return self.telegram_api_base
        if channel_type is ChannelType.SLACK:
            return self.slack_api_base
        return self.graph_api_base
