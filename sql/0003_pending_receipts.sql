-- Delivery receipts (WhatsApp statuses) can overtake the sender: the platform may post 'sent' or
-- 'delivered' before the sender has stored the platform's message id. Such a receipt waits here and
-- is applied when the sender records the id. Rows that never match are pruned after 7 days.

CREATE FUNCTION delivery_rank(status text) RETURNS integer
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE status WHEN 'queued' THEN 0 WHEN 'sending' THEN 1 WHEN 'sent' THEN 2
                       WHEN 'delivered' THEN 3 WHEN 'read' THEN 4 ELSE 9 END
$$;

CREATE TABLE pending_receipts (
    channel_id           uuid NOT NULL,
    platform_message_id  text NOT NULL,
    status               text NOT NULL,
    at                   timestamptz NOT NULL,
    error_code           text,
    error                text,
    received_at          timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (channel_id, platform_message_id, status)
);
CREATE INDEX pending_receipts_received_idx ON pending_receipts (received_at);
