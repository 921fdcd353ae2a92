-- The admin API: hashed API tokens, the audit log, contact tags and opt-out, and the API's own
-- database role under row-level security.
--
-- Isolation, twice: every API query filters by the token's tenant, and the API's transactions run as
-- the role engine_api (no BYPASSRLS, owns nothing) with `set_config('app.tenant_id', ..., true)`, so
-- a query that forgot its tenant filter still sees only that tenant's rows. The workers, senders and
-- `engine load` keep their own (owner) role and are not affected by these policies.

CREATE TABLE api_tokens (
    id            uuid PRIMARY KEY,
    tenant_id     uuid NOT NULL REFERENCES organizations(id) ON DELETE CASCADE,
    name          text NOT NULL DEFAULT '',
    prefix        text NOT NULL,              -- the first characters of the token, to recognise it in a list
    token_hash    bytea NOT NULL UNIQUE,      -- SHA-256 of the whole token; the token itself is never stored
    scopes        text[] NOT NULL CHECK (scopes <@ ARRAY['read','write','agent']::text[]),
    created_by    text NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    last_used_at  timestamptz,
    expires_at    timestamptz,
    revoked_at    timestamptz
);
CREATE INDEX api_tokens_tenant_idx ON api_tokens (tenant_id, created_at);

-- Every write through the API: who (token), what (action on a resource), when, and the ids (and
-- versions) before and after. Never bodies, never secrets.
CREATE TABLE audit_logs (
    id           uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id    uuid NOT NULL REFERENCES organizations(id) ON DELETE CASCADE,
    actor        text NOT NULL,               -- 'token:<prefix>' (+ the token's name)
    token_id     uuid,
    action       text NOT NULL,               -- create | update | delete | reply | handback | close | replay ...
    resource     text NOT NULL,               -- bots, channels, rules, flows, conversations, ...
    resource_id  text,
    before       jsonb,
    after        jsonb,
    created_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX audit_logs_tenant_idx ON audit_logs (tenant_id, created_at DESC);

-- Contacts: tags and opt-out are written by the API only (the workers' contact upsert leaves them
-- alone); attributes stay the workers' (the API changes them through the conversation's shard).
ALTER TABLE channel_contacts ADD COLUMN tags text[] NOT NULL DEFAULT '{}';
ALTER TABLE channel_contacts ADD COLUMN opted_out_at timestamptz;

-- For the conversation list: filters by status and by channel, newest activity first.
CREATE INDEX conversations_tenant_status_idx ON conversations (tenant_id, status, last_message_at);

-- The API's role. Roles are cluster-wide: another database of the cluster may have created it.
DO $$
BEGIN
    CREATE ROLE engine_api NOLOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOINHERIT NOBYPASSRLS;
EXCEPTION WHEN duplicate_object OR unique_violation THEN
    NULL;
END $$;
ALTER ROLE engine_api NOSUPERUSER NOBYPASSRLS;

-- The tenant of the current API transaction, or NULL (no row matches NULL) when none was set.
CREATE FUNCTION api_tenant() RETURNS uuid
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT nullif(current_setting('app.tenant_id', true), '')::uuid
$$;

-- A token is looked up before its tenant is known, so through this function (run as its owner)
-- rather than by granting the API role the token table. It touches last_used_at at most once a
-- minute per token, so authenticating is not a write per request.
CREATE FUNCTION api_token_authenticate(digest bytea)
RETURNS TABLE (id uuid, tenant_id uuid, name text, prefix text, scopes text[],
               expires_at timestamptz, revoked_at timestamptz)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
BEGIN
    UPDATE api_tokens t SET last_used_at = now()
    WHERE t.token_hash = digest AND (t.last_used_at IS NULL OR t.last_used_at < now() - interval '1 minute');
    RETURN QUERY SELECT t.id, t.tenant_id, t.name, t.prefix, t.scopes, t.expires_at, t.revoked_at
                 FROM api_tokens t WHERE t.token_hash = digest;
END $$;
REVOKE ALL ON FUNCTION api_token_authenticate(bytea) FROM PUBLIC;

GRANT USAGE ON SCHEMA public TO engine_api;
GRANT EXECUTE ON FUNCTION api_token_authenticate(bytea) TO engine_api;
GRANT EXECUTE ON FUNCTION api_tenant() TO engine_api;
GRANT SELECT, UPDATE ON organizations TO engine_api;
GRANT SELECT, INSERT, UPDATE, DELETE ON bots, bot_configuration, channels, routing_rules, bot_flows, tools, faqs,
    kb_documents TO engine_api;
GRANT SELECT, UPDATE ON channel_contacts TO engine_api;
GRANT SELECT ON conversations, message_history, channel_messages, tool_executions TO engine_api;
GRANT SELECT, INSERT ON audit_logs TO engine_api;

ALTER TABLE organizations ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON organizations TO engine_api USING (id = api_tenant()) WITH CHECK (id = api_tenant());

DO $$
DECLARE
    tbl text;
BEGIN
    FOREACH tbl IN ARRAY ARRAY['bots', 'bot_configuration', 'channels', 'channel_contacts', 'conversations',
                               'message_history', 'channel_messages', 'routing_rules', 'bot_flows', 'tools',
                               'tool_executions', 'faqs', 'kb_documents', 'audit_logs', 'api_tokens'] LOOP
        EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', tbl);
        EXECUTE format('CREATE POLICY tenant_isolation ON %I TO engine_api '
                       'USING (tenant_id = api_tenant()) WITH CHECK (tenant_id = api_tenant())', tbl);
    END LOOP;
END $$;
