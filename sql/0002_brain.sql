-- The brain: routing rules, versioned bot flows, tools and their executions, FAQs, a full-text
-- knowledge base and bot memories. Ids are uuids computed by the engine from slugs (stable_id), so
-- loading the same tenant file twice converges on the same rows.

CREATE TABLE routing_rules (
    id          uuid PRIMARY KEY,
    tenant_id   uuid NOT NULL REFERENCES organizations(id) ON DELETE CASCADE,
    name        text NOT NULL,
    priority    integer NOT NULL DEFAULT 100,   -- smaller runs first
    conditions  jsonb,                          -- NULL: always matches
    actions     jsonb NOT NULL,
    status      text NOT NULL DEFAULT 'active' CHECK (status IN ('active','disabled')),
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    UNIQUE (tenant_id, name)
);
CREATE INDEX routing_rules_tenant_idx ON routing_rules (tenant_id, priority);

-- One row per version: an edit inserts version + 1 and never rewrites an old version, so a
-- conversation keeps running the version it started on (conversations.flow_id, flow_version).
CREATE TABLE bot_flows (
    id          uuid NOT NULL,                  -- stable_id(tenant, 'flow', bot, slug): same across versions
    version     integer NOT NULL CHECK (version > 0),
    tenant_id   uuid NOT NULL REFERENCES organizations(id) ON DELETE CASCADE,
    bot_id      uuid NOT NULL REFERENCES bots(id) ON DELETE CASCADE,
    slug        text NOT NULL,
    name        text NOT NULL,
    definition  jsonb NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (id, version)
);
CREATE INDEX bot_flows_tenant_idx ON bot_flows (tenant_id, bot_id, slug, version DESC);

ALTER TABLE bots ADD COLUMN default_flow_id uuid;   -- a bot_flows.id; its latest version starts

CREATE TABLE tools (
    id          uuid PRIMARY KEY,
    tenant_id   uuid NOT NULL REFERENCES organizations(id) ON DELETE CASCADE,
    slug        text NOT NULL,
    kind        text NOT NULL CHECK (kind IN ('http')),
    config      jsonb NOT NULL,                 -- method, url, headers, body templates, timeout, retries
    secrets     bytea,                          -- Fernet token of {name: value}; referenced as {{secret.name}}
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    UNIQUE (tenant_id, slug)
);

-- One row per tool call, written in the worker's batch with the message that caused it. The id is
-- derived from the inbound event and the step, so a redelivered event conflicts instead of doubling.
CREATE TABLE tool_executions (
    id               uuid PRIMARY KEY,
    tenant_id        uuid NOT NULL,
    conversation_id  uuid NOT NULL,
    tool_id          uuid,                      -- NULL for built-ins (kb_search, memory_get, ...)
    tool_name        text NOT NULL,
    status           text NOT NULL CHECK (status IN ('ok','error','timeout')),
    attempts         integer NOT NULL,
    duration_ms      double precision NOT NULL,
    request          jsonb NOT NULL,            -- excerpt, secrets redacted
    response         jsonb,                     -- excerpt
    error            text,
    idempotency_key  text,
    created_at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX tool_executions_conversation_idx ON tool_executions (conversation_id, created_at);
CREATE INDEX tool_executions_tenant_idx ON tool_executions (tenant_id, created_at);

CREATE TABLE faqs (
    id          uuid PRIMARY KEY,
    tenant_id   uuid NOT NULL REFERENCES organizations(id) ON DELETE CASCADE,
    bot_id      uuid NOT NULL REFERENCES bots(id) ON DELETE CASCADE,
    question    text NOT NULL,
    answer      text NOT NULL,
    keywords    text[] NOT NULL DEFAULT '{}',
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX faqs_bot_idx ON faqs (bot_id);

CREATE TABLE kb_documents (
    id          uuid PRIMARY KEY,
    tenant_id   uuid NOT NULL REFERENCES organizations(id) ON DELETE CASCADE,
    bot_id      uuid NOT NULL REFERENCES bots(id) ON DELETE CASCADE,
    slug        text NOT NULL,
    title       text NOT NULL,
    body        text NOT NULL,
    url         text,
    language    regconfig NOT NULL DEFAULT 'english',
    search      tsvector GENERATED ALWAYS AS (
                    setweight(to_tsvector(language, title), 'A') || setweight(to_tsvector(language, body), 'B')
                ) STORED,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    UNIQUE (bot_id, slug)
);
CREATE INDEX kb_documents_search_idx ON kb_documents USING gin (search);

-- What a bot remembers: scope '*' is bot-wide, otherwise a contact id.
CREATE TABLE bot_memories (
    tenant_id   uuid NOT NULL,
    bot_id      uuid NOT NULL REFERENCES bots(id) ON DELETE CASCADE,
    scope       text NOT NULL,
    key         text NOT NULL,
    value       jsonb NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (bot_id, scope, key)
);

-- Workers keep compiled definitions in memory and reload one tenant when it changes: any write to
-- the tables below notifies 'engine_definitions' with the tenant id (TG_ARGV[0] names the column).
-- PostgreSQL folds identical notifications of one transaction into one.
CREATE FUNCTION notify_engine_definitions() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    tenant text;
BEGIN
    IF TG_OP = 'DELETE' THEN
        tenant := to_jsonb(OLD) ->> TG_ARGV[0];
    ELSE
        tenant := to_jsonb(NEW) ->> TG_ARGV[0];
    END IF;
    PERFORM pg_notify('engine_definitions', tenant);
    RETURN NULL;
END $$;

CREATE TRIGGER routing_rules_notify AFTER INSERT OR UPDATE OR DELETE ON routing_rules
    FOR EACH ROW EXECUTE FUNCTION notify_engine_definitions('tenant_id');
CREATE TRIGGER bot_flows_notify AFTER INSERT OR UPDATE OR DELETE ON bot_flows
    FOR EACH ROW EXECUTE FUNCTION notify_engine_definitions('tenant_id');
CREATE TRIGGER tools_notify AFTER INSERT OR UPDATE OR DELETE ON tools
    FOR EACH ROW EXECUTE FUNCTION notify_engine_definitions('tenant_id');
CREATE TRIGGER faqs_notify AFTER INSERT OR UPDATE OR DELETE ON faqs
    FOR EACH ROW EXECUTE FUNCTION notify_engine_definitions('tenant_id');
CREATE TRIGGER bots_notify AFTER INSERT OR UPDATE OR DELETE ON bots
    FOR EACH ROW EXECUTE FUNCTION notify_engine_definitions('tenant_id');
CREATE TRIGGER bot_configuration_notify AFTER INSERT OR UPDATE OR DELETE ON bot_configuration
    FOR EACH ROW EXECUTE FUNCTION notify_engine_definitions('tenant_id');
CREATE TRIGGER channels_notify AFTER INSERT OR UPDATE OR DELETE ON channels
    FOR EACH ROW EXECUTE FUNCTION notify_engine_definitions('tenant_id');
CREATE TRIGGER organizations_notify AFTER INSERT OR UPDATE OR DELETE ON organizations
    FOR EACH ROW EXECUTE FUNCTION notify_engine_definitions('id');
