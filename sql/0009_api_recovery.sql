-- The admin API meets recovery campaigns: one marketing opt-out, and row-level security on the
-- recovery tables for the API's role (engine_api, sql/0008), the same way 0008 does it.

-- One truth for the opt-out: contact_preferences (0007), which the scheduler checks at claim time and
-- which STOP words and WhatsApp user_preferences write. The API writes it too (source 'api'), so the
-- column 0008 added for the API alone goes: nothing else read it, and a second column would have to be
-- kept in step with preferences of contacts that have no channel_contacts row yet.
ALTER TABLE channel_contacts DROP COLUMN opted_out_at;

GRANT SELECT, INSERT, UPDATE ON contact_preferences, recovery_campaigns, recovery_analytics TO engine_api;
GRANT SELECT, INSERT, UPDATE, DELETE ON channel_templates TO engine_api;
GRANT SELECT ON recovery_events, recovery_messages TO engine_api;
-- recovery_settings (the events signing keys) and recovery_deliveries are not granted: no API route
-- reads them. They get the policy all the same, so a future grant cannot leak another tenant's rows.

DO $$
DECLARE
    tbl text;
BEGIN
    FOREACH tbl IN ARRAY ARRAY['recovery_settings', 'channel_templates', 'recovery_campaigns', 'recovery_events',
                               'recovery_deliveries', 'recovery_messages', 'contact_preferences',
                               'recovery_analytics'] LOOP
        EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', tbl);
        EXECUTE format('CREATE POLICY tenant_isolation ON %I TO engine_api '
                       'USING (tenant_id = api_tenant()) WITH CHECK (tenant_id = api_tenant())', tbl);
    END LOOP;
END $$;
