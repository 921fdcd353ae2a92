-- Recovery campaigns: events posted by commerce systems, campaigns (from the tenant file), their
-- timed messages claimed by `engine scheduler` (FOR UPDATE SKIP LOCKED), opt-outs, and the funnel.
-- Every CHECK list here is the same list as the matching enum in engine/recovery/campaigns.py
-- (tests/unit/test_recovery_campaigns.py compares them).

-- Per-tenant recovery settings: the events signing keys (Fernet-encrypted, like channel secrets) and
-- the words that opt a contact out of marketing (or back in).
CREATE TABLE recovery_settings (
    tenant_id      uuid PRIMARY KEY REFERENCES organizations(id) ON DELETE CASCADE,
    secrets        bytea,                       -- Fernet token of {signing_key, shopify_secret}
    stop_words     text[] NOT NULL DEFAULT '{}',
    resume_words   text[] NOT NULL DEFAULT '{}',
    opt_out_reply  text,
    updated_at     timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE channel_templates (
    id           uuid PRIMARY KEY,
    tenant_id    uuid NOT NULL REFERENCES organizations(id) ON DELETE CASCADE,
    name         text NOT NULL,
    language     text NOT NULL,
    category     text NOT NULL CHECK (category IN ('marketing','utility','authentication')),
    components   jsonb NOT NULL,               -- [{type: body|header|button, ..., parameters: [...]}]
    text         text,                         -- what the approved template says (transcripts)
    status       text NOT NULL DEFAULT 'approved' CHECK (status IN ('pending','approved','rejected','disabled')),
    platform_id  text,
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    UNIQUE (tenant_id, name, language)
);

CREATE TABLE recovery_campaigns (
    id             uuid PRIMARY KEY,
    tenant_id      uuid NOT NULL REFERENCES organizations(id) ON DELETE CASCADE,
    slug           text NOT NULL,
    name           text NOT NULL,
    campaign_type  text NOT NULL CHECK (campaign_type IN ('cart_abandonment','checkout_abandonment','payment_failed',
                                        'churn_prevention','winback','inactive_user','unanswered','custom')),
    category       text NOT NULL CHECK (category IN ('marketing','utility')),
    status         text NOT NULL DEFAULT 'active' CHECK (status IN ('active','paused','archived')),
    triggers       text[] NOT NULL,
    definition     jsonb NOT NULL,             -- the validated campaign (steps, audience, windows, ...)
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now(),
    UNIQUE (tenant_id, slug)
);

-- One row per (tenant, source, source id): a retried post conflicts and changes nothing.
CREATE TABLE recovery_events (
    id               uuid PRIMARY KEY,
    tenant_id        uuid NOT NULL REFERENCES organizations(id) ON DELETE CASCADE,
    event_type       text NOT NULL CHECK (event_type IN ('cart_abandoned','checkout_abandoned','payment_failed',
                                          'subscription_cancelled','inactive_detected','order_placed',
                                          'conversation_unanswered','custom')),
    source           text NOT NULL,
    source_id        text NOT NULL,
    contact_id       uuid,                     -- the channel contact it was matched to (NULL: none)
    channel_id       uuid,
    customer         jsonb NOT NULL DEFAULT '{}',  -- as posted: platform/id, phone, email, name
    value            numeric(14, 2),
    currency         text,
    event_data       jsonb NOT NULL DEFAULT '{}',
    status           text NOT NULL DEFAULT 'received'
                     CHECK (status IN ('received','scheduled','recovered','converted','expired','ignored',
                                       'attributed','unattributed')),
    occurred_at      timestamptz NOT NULL,
    expires_at       timestamptz NOT NULL,
    recovered_at     timestamptz,
    recovered_value  numeric(14, 2),
    order_event_id   uuid,                     -- the order_placed event that recovered it
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    UNIQUE (tenant_id, source, source_id)
);
CREATE INDEX recovery_events_contact_idx ON recovery_events (contact_id, event_type, occurred_at);
CREATE INDEX recovery_events_tenant_idx ON recovery_events (tenant_id, occurred_at);

-- Deliveries a source identifies itself (Shopify's X-Shopify-Webhook-Id): seen once.
CREATE TABLE recovery_deliveries (
    tenant_id    uuid NOT NULL,
    source       text NOT NULL,
    delivery_id  text NOT NULL,
    received_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, source, delivery_id)
);

-- One row per (campaign, event, step): a step can never be scheduled, hence sent, twice.
CREATE TABLE recovery_messages (
    id                   uuid PRIMARY KEY,     -- stable_id(campaign, event, step)
    tenant_id            uuid NOT NULL,
    campaign_id          uuid NOT NULL REFERENCES recovery_campaigns(id) ON DELETE CASCADE,
    event_id             uuid NOT NULL REFERENCES recovery_events(id) ON DELETE CASCADE,
    step                 integer NOT NULL CHECK (step >= 0),
    contact_id           uuid,
    channel_id           uuid,
    conversation_id      uuid,
    status               text NOT NULL DEFAULT 'pending'
                         CHECK (status IN ('pending','queued','sent','delivered','read','failed','skipped',
                                           'cancelled')),
    skip_reason          text CHECK (skip_reason IN ('converted','replied','opted_out','expired','stale',
                                     'frequency_cap','max_messages','outside_window','no_contact','no_channel',
                                     'audience','campaign_inactive','marketing_cap','platform_window')),
    kind                 text,                 -- template | text (what was sent)
    template_name        text,
    body                 text,
    scheduled_at         timestamptz NOT NULL,
    claimed_at           timestamptz,
    queued_at            timestamptz,
    sent_at              timestamptz,
    delivered_at         timestamptz,
    read_at              timestamptz,
    replied_at           timestamptz,
    converted_at         timestamptz,
    failed_at            timestamptz,
    channel_message_id   uuid,
    channel_message_at   timestamptz,          -- channel_messages.created_at (its partition key)
    error_code           text,
    error                text,
    retry_count          integer NOT NULL DEFAULT 0,
    conversion_value     numeric(14, 2),
    order_event_id       uuid,
    created_at           timestamptz NOT NULL DEFAULT now(),
    updated_at           timestamptz NOT NULL DEFAULT now(),
    UNIQUE (campaign_id, event_id, step)
);
-- The scheduler's claim: only pending rows, by due time.
CREATE INDEX recovery_messages_due_idx ON recovery_messages (scheduled_at) WHERE status = 'pending';
CREATE INDEX recovery_messages_contact_idx ON recovery_messages (contact_id, queued_at DESC);
CREATE INDEX recovery_messages_event_idx ON recovery_messages (event_id);
CREATE INDEX recovery_messages_channel_message_idx ON recovery_messages (channel_message_id)
    WHERE channel_message_id IS NOT NULL;

-- A contact's marketing opt-out (STOP words, WhatsApp user_preferences). The latest change wins.
CREATE TABLE contact_preferences (
    contact_id         uuid PRIMARY KEY,
    tenant_id          uuid NOT NULL,
    marketing_opt_out  boolean NOT NULL,
    source             text NOT NULL,
    changed_at         timestamptz NOT NULL
);

-- The funnel per campaign and day, recomputed from the rows above (idempotent).
CREATE TABLE recovery_analytics (
    tenant_id          uuid NOT NULL,
    campaign_id        uuid NOT NULL REFERENCES recovery_campaigns(id) ON DELETE CASCADE,
    period             text NOT NULL CHECK (period IN ('day')),
    period_start       date NOT NULL,
    events             integer NOT NULL DEFAULT 0,
    scheduled          integer NOT NULL DEFAULT 0,
    sent               integer NOT NULL DEFAULT 0,
    delivered          integer NOT NULL DEFAULT 0,
    read               integer NOT NULL DEFAULT 0,
    replied            integer NOT NULL DEFAULT 0,
    converted          integer NOT NULL DEFAULT 0,
    skipped            jsonb NOT NULL DEFAULT '{}',   -- {reason: count}
    revenue_at_risk    numeric(14, 2) NOT NULL DEFAULT 0,
    revenue_recovered  numeric(14, 2) NOT NULL DEFAULT 0,
    conversion_rate    numeric(7, 4) NOT NULL DEFAULT 0,   -- converted events / events
    updated_at         timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (campaign_id, period, period_start)
);

-- Schedulers sleep until the next due step; a row made pending (inserted or rescheduled) wakes them.
CREATE FUNCTION notify_recovery_due() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.status = 'pending' THEN
        PERFORM pg_notify('engine_recovery', extract(epoch FROM NEW.scheduled_at)::text);
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER recovery_messages_notify AFTER INSERT OR UPDATE OF status, scheduled_at ON recovery_messages
    FOR EACH ROW EXECUTE FUNCTION notify_recovery_due();

-- Matching a posted customer to a channel contact, and a contact to its conversations.
CREATE INDEX channel_contacts_phone_idx ON channel_contacts (tenant_id, (attributes ->> 'phone'));
CREATE INDEX channel_contacts_email_idx ON channel_contacts (tenant_id, (attributes ->> 'email'));
CREATE INDEX conversations_contact_idx ON conversations (contact_id, last_message_at DESC);
