-- The spine: tenants, bots, channels, contacts, conversations, messages and delivery tracking.
-- Ids are uuids computed by the engine (uuid5 of platform ids), so retries converge on one row.

CREATE TABLE organizations (
    id          uuid PRIMARY KEY,
    slug        text NOT NULL UNIQUE,
    name        text NOT NULL,
    timezone    text NOT NULL DEFAULT 'UTC',
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE bots (
    id          uuid PRIMARY KEY,
    tenant_id   uuid NOT NULL REFERENCES organizations(id) ON DELETE CASCADE,
    slug        text NOT NULL,
    name        text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    UNIQUE (tenant_id, slug)
);

CREATE TABLE bot_configuration (
    bot_id        uuid PRIMARY KEY REFERENCES bots(id) ON DELETE CASCADE,
    tenant_id     uuid NOT NULL REFERENCES organizations(id) ON DELETE CASCADE,
    welcome_text  text NOT NULL DEFAULT 'Hello {name}!',
    echo          boolean NOT NULL DEFAULT true,
    settings      jsonb NOT NULL DEFAULT '{}',
    updated_at    timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE channels (
    id           uuid PRIMARY KEY,
    tenant_id    uuid NOT NULL REFERENCES organizations(id) ON DELETE CASCADE,
    bot_id       uuid REFERENCES bots(id) ON DELETE SET NULL,
    slug         text NOT NULL,
    type         text NOT NULL CHECK (type IN ('whatsapp','telegram','slack','messenger','instagram','web')),
    external_id  text,            -- phone-number id, bot username, Slack team/app, page id
    credentials  bytea,           -- Fernet token of a JSON object of secrets; never logged
    config       jsonb NOT NULL DEFAULT '{}',
    active       boolean NOT NULL DEFAULT true,
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    UNIQUE (tenant_id, slug)
);
CREATE INDEX channels_type_external_idx ON channels (type, external_id);

CREATE TABLE channel_contacts (
    id            uuid PRIMARY KEY,
    tenant_id     uuid NOT NULL,
    channel_id    uuid NOT NULL REFERENCES channels(id) ON DELETE CASCADE,
    external_id   text NOT NULL,
    name          text,
    attributes    jsonb NOT NULL DEFAULT '{}',
    created_at    timestamptz NOT NULL DEFAULT now(),
    last_seen_at  timestamptz NOT NULL DEFAULT now(),
    UNIQUE (channel_id, external_id)
);
CREATE INDEX channel_contacts_tenant_idx ON channel_contacts (tenant_id);

CREATE TABLE conversations (
    id               uuid PRIMARY KEY,
    tenant_id        uuid NOT NULL,
    channel_id       uuid NOT NULL REFERENCES channels(id) ON DELETE CASCADE,
    contact_id       uuid NOT NULL REFERENCES channel_contacts(id) ON DELETE CASCADE,
    external_key     text NOT NULL,
    bot_id           uuid,
    status           text NOT NULL DEFAULT 'bot' CHECK (status IN ('bot','human','closed')),
    flow_id          uuid,
    flow_version     integer,
    node_id          text,
    variables        jsonb NOT NULL DEFAULT '{}',
    tags             text[] NOT NULL DEFAULT '{}',
    created_at       timestamptz NOT NULL DEFAULT now(),
    last_message_at  timestamptz NOT NULL DEFAULT now(),
    UNIQUE (channel_id, external_key)
);
CREATE INDEX conversations_tenant_last_idx ON conversations (tenant_id, last_message_at DESC);

-- The idempotency ledger: one row per inbound platform event ever processed. A conflict here
-- means a duplicate delivery. Rows older than the platforms' retry horizon (7 days) may be pruned.
CREATE TABLE inbound_events (
    channel_id       uuid NOT NULL,
    event_id         text NOT NULL,
    conversation_id  uuid NOT NULL,
    processed_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (channel_id, event_id)
);
CREATE INDEX inbound_events_conversation_idx ON inbound_events (conversation_id, processed_at DESC);

-- Every inbound and outbound message, partitioned by month.
CREATE TABLE message_history (
    id               uuid NOT NULL,
    tenant_id        uuid NOT NULL,
    channel_id       uuid NOT NULL,
    conversation_id  uuid NOT NULL,
    direction        text NOT NULL CHECK (direction IN ('inbound','outbound')),
    sender           text NOT NULL,   -- contact key for inbound, 'bot' for outbound
    message_type     text NOT NULL,
    text             text,
    payload          jsonb NOT NULL DEFAULT '{}',
    external_id      text,            -- platform event id (inbound)
    created_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (id, created_at)
) PARTITION BY RANGE (created_at);
CREATE INDEX message_history_conversation_idx ON message_history (conversation_id, created_at);
CREATE INDEX message_history_tenant_idx ON message_history (tenant_id, created_at);
CREATE TABLE message_history_default PARTITION OF message_history DEFAULT;

-- Outbound delivery tracking: queued -> sending -> sent -> delivered -> read | failed.
CREATE TABLE channel_messages (
    id                   uuid NOT NULL,
    tenant_id            uuid NOT NULL,
    channel_id           uuid NOT NULL,
    conversation_id      uuid NOT NULL,
    message_history_id   uuid,
    status               text NOT NULL DEFAULT 'queued'
                         CHECK (status IN ('queued','sending','sent','delivered','read','failed')),
    body                 jsonb NOT NULL,   -- the OutboundMessage, so a stale row can be re-published
    platform_message_id  text,
    attempts             integer NOT NULL DEFAULT 0,
    error_code           text,
    error                text,
    created_at           timestamptz NOT NULL DEFAULT now(),
    updated_at           timestamptz NOT NULL DEFAULT now(),
    sent_at              timestamptz,
    delivered_at         timestamptz,
    read_at              timestamptz,
    failed_at            timestamptz,
    PRIMARY KEY (id, created_at)
) PARTITION BY RANGE (created_at);
CREATE INDEX channel_messages_platform_idx ON channel_messages (channel_id, platform_message_id);
CREATE INDEX channel_messages_pending_idx ON channel_messages (updated_at) WHERE status IN ('queued','sending');
CREATE TABLE channel_messages_default PARTITION OF channel_messages DEFAULT;

-- What each platform delivered (for audit and replay); the body only when capture is on.
CREATE TABLE channel_webhooks (
    id           bigint GENERATED ALWAYS AS IDENTITY,
    channel_id   uuid NOT NULL,
    tenant_id    uuid NOT NULL,
    events       integer NOT NULL,
    body         bytea,
    received_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (id, received_at)
) PARTITION BY RANGE (received_at);
CREATE TABLE channel_webhooks_default PARTITION OF channel_webhooks DEFAULT;

-- Live worker processes and what they do; a row whose heartbeat is older than the lease TTL is dead.
CREATE TABLE worker_leases (
    worker_id     text PRIMARY KEY,
    role          text NOT NULL,
    host          text NOT NULL,
    pid           integer NOT NULL,
    started_at    timestamptz NOT NULL DEFAULT now(),
    heartbeat_at  timestamptz NOT NULL DEFAULT now()
);

-- Monthly partitions: create [month, month + 1) for the hot tables; called by `engine migrate`
-- and by workers at start, a few months ahead. Rows outside land in the DEFAULT partition.
CREATE FUNCTION ensure_month_partitions(months_ahead integer) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    tbl text;
    m date;
BEGIN
    FOREACH tbl IN ARRAY ARRAY['message_history', 'channel_messages'] LOOP
        FOR i IN 0..months_ahead LOOP
            m := (date_trunc('month', now()) + make_interval(months => i))::date;
            IF to_regclass(format('%s_%s', tbl, to_char(m, 'YYYYMM'))) IS NULL THEN
                EXECUTE format('CREATE TABLE %I PARTITION OF %I FOR VALUES FROM (%L) TO (%L)',
                               tbl || '_' || to_char(m, 'YYYYMM'), tbl, m, (m + interval '1 month')::date);
            END IF;
        END LOOP;
    END LOOP;
END $$;
