-- Master-key canary: one row holding a Fernet token of a known value, written under ENGINE_MASTER_KEY
-- by the first process that starts with a key (or by `engine load`). Every process decrypts it at start
-- and refuses to run with a key that cannot; /readyz checks it too; `engine rotate-key` re-encrypts it.
CREATE TABLE key_canary (
    id          integer PRIMARY KEY DEFAULT 1 CHECK (id = 1),
    token       bytea NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    rotated_at  timestamptz
);

-- A platform account (WhatsApp number, page, Instagram account, Slack workspace, bot) belongs to one
-- channel of its type: a body is bound to the channel whose external_id it names. NULLs stay distinct.
DROP INDEX IF EXISTS channels_type_external_idx;
CREATE UNIQUE INDEX channels_type_external_key ON channels (type, external_id);
