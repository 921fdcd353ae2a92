-- When a recovery message was last queued to each contact. The worker reads it back from the contact
-- upsert it runs anyway, and looks for a recovery message to mark replied (MARK_REPLIED) only for a
-- contact sent one within the reply window: nearly every inbound message then costs no statement for
-- recovery at all, where before every batch planned and ran one.
ALTER TABLE channel_contacts ADD COLUMN recovery_queued_at timestamptz;

UPDATE channel_contacts k SET recovery_queued_at = m.queued_at
FROM (SELECT contact_id, max(queued_at) AS queued_at FROM recovery_messages
      WHERE queued_at IS NOT NULL GROUP BY contact_id) m
WHERE k.id = m.contact_id;
