-- Webhook capture (load testing): what each platform delivered, byte for byte, for export and replay.
-- channel_webhooks (0001) gains the columns a replay needs; it is partitioned by day so a retention
-- in days is a DROP TABLE of old partitions rather than a DELETE.
ALTER TABLE channel_webhooks
    ADD COLUMN channel_type     text,
    ADD COLUMN outcome          text,
    ADD COLUMN status           smallint,
    ADD COLUMN headers          jsonb NOT NULL DEFAULT '{}'::jsonb,
    ADD COLUMN conversation_key text;

CREATE INDEX channel_webhooks_channel_received ON channel_webhooks (channel_id, received_at);

-- Daily partitions [day, day + 1) for today and days_ahead more. A day whose rows already sit in the
-- DEFAULT partition (capture ran without partitions) is skipped rather than failing the caller.
CREATE FUNCTION ensure_webhook_partitions(days_ahead integer) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    d date;
BEGIN
    FOR i IN 0..days_ahead LOOP
        d := (current_date + i);
        IF to_regclass(format('channel_webhooks_%s', to_char(d, 'YYYYMMDD'))) IS NULL THEN
            BEGIN
                EXECUTE format('CREATE TABLE %I PARTITION OF channel_webhooks FOR VALUES FROM (%L) TO (%L)',
                               'channel_webhooks_' || to_char(d, 'YYYYMMDD'), d, d + 1);
            EXCEPTION WHEN check_violation THEN
                RAISE NOTICE 'channel_webhooks: rows of % are in the default partition; day partition skipped', d;
            END;
        END IF;
    END LOOP;
END $$;

-- Drop the daily partitions that end before today - keep_days, and delete older rows from the
-- DEFAULT partition; returns the number of partitions dropped.
CREATE FUNCTION drop_webhook_partitions(keep_days integer) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    part record;
    dropped integer := 0;
    cutoff date := current_date - keep_days;
BEGIN
    FOR part IN
        SELECT c.relname FROM pg_inherits i
        JOIN pg_class c ON c.oid = i.inhrelid
        WHERE i.inhparent = 'channel_webhooks'::regclass AND c.relname ~ '^channel_webhooks_[0-9]{8}$'
    LOOP
        IF to_date(right(part.relname, 8), 'YYYYMMDD') < cutoff THEN
            EXECUTE format('DROP TABLE %I', part.relname);
            dropped := dropped + 1;
        END IF;
    END LOOP;
    DELETE FROM channel_webhooks_default WHERE received_at < cutoff;
    RETURN dropped;
END $$;
