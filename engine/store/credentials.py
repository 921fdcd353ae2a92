"""The master-key canary and key rotation: which key the stored credentials are under.

check_master_key() runs at the start of every process (receiver, worker, sender, `engine load`): it
raises CredentialError unless ENGINE_MASTER_KEY decrypts the stored canary. The first process with a
key writes the canary, after checking that the key decrypts a credential already stored (if any), so
a wrong key cannot be the one that writes it. rotate() re-encrypts every encrypted column under the
first key: channel credentials, tool secrets and the canary.
"""

from __future__ import annotations

import asyncpg

from engine.crypto import CredentialError, Vault

CANARY = {"canary": "engine-master-key"}

SELECT_CANARY = "SELECT token FROM key_canary WHERE id = 1"
INSERT_CANARY = "INSERT INTO key_canary (id, token) VALUES (1, $1) ON CONFLICT (id) DO NOTHING"
SELECT_ANY_CREDENTIAL = """
SELECT token FROM (
    (SELECT credentials AS token FROM channels WHERE credentials IS NOT NULL LIMIT 1)
    UNION ALL
    (SELECT secrets AS token FROM tools WHERE secrets IS NOT NULL LIMIT 1)
) stored LIMIT 1
"""
SELECT_CHANNEL_CREDENTIALS = "SELECT id, credentials FROM channels WHERE credentials IS NOT NULL FOR UPDATE"
UPDATE_CHANNEL_CREDENTIALS = "UPDATE channels SET credentials = $2, updated_at = now() WHERE id = $1"
SELECT_TOOL_SECRETS = "SELECT id, secrets FROM tools WHERE secrets IS NOT NULL FOR UPDATE"
UPDATE_TOOL_SECRETS = "UPDATE tools SET secrets = $2 WHERE id = $1"
SELECT_CANARY_FOR_UPDATE = "SELECT token FROM key_canary WHERE id = 1 FOR UPDATE"
UPDATE_CANARY = "UPDATE key_canary SET token = $1, rotated_at = now() WHERE id = 1"

WRONG_KEY = "ENGINE_MASTER_KEY does not decrypt the stored key canary: it is not the key the credentials are under"


def _is_canary(vault: Vault, token: bytes) -> bool:
    try:
        return vault.decrypt(token) == CANARY
    except CredentialError:
        return False


async def check_master_key(pool: asyncpg.Pool, master_key: str) -> Vault:
    """The vault for master_key, once it is known to decrypt the canary (written here if absent)."""
    vault = Vault(master_key)  # CredentialError when missing or not a Fernet key
    async with pool.acquire() as conn:
        token = await conn.fetchval(SELECT_CANARY)
        if token is None:
            stored = await conn.fetchval(SELECT_ANY_CREDENTIAL)
            if stored is not None:
                vault.decrypt(stored)  # CredentialError: a wrong key must not write the canary
            await conn.execute(INSERT_CANARY, vault.encrypt(CANARY))
            token = await conn.fetchval(SELECT_CANARY)  # a concurrent first start may have won
    if not _is_canary(vault, token):
        raise CredentialError(WRONG_KEY)
    return vault


async def master_key_ok(pool: asyncpg.Pool, vault: Vault) -> bool:
    """For /readyz: the canary exists and decrypts with this vault."""
    token = await pool.fetchval(SELECT_CANARY)
    return token is not None and _is_canary(vault, token)


async def rotate(pool: asyncpg.Pool, vault: Vault) -> dict[str, int]:
    """Re-encrypt every encrypted column under the vault's first key, in one transaction; the counts
    of rows re-encrypted per kind. Raises CredentialError if any value does not decrypt."""
    async with pool.acquire() as conn, conn.transaction():
        channels = await conn.fetch(SELECT_CHANNEL_CREDENTIALS)
        for row in channels:
            await conn.execute(UPDATE_CHANNEL_CREDENTIALS, row["id"], _rotate(vault, row["credentials"]))
        tools = await conn.fetch(SELECT_TOOL_SECRETS)
        for row in tools:
            await conn.execute(UPDATE_TOOL_SECRETS, row["id"], _rotate(vault, row["secrets"]))
        canary = await conn.fetchval(SELECT_CANARY_FOR_UPDATE)
        if canary is not None:
            await conn.execute(UPDATE_CANARY, _rotate(vault, canary))
    return {"channels": len(channels), "tools": len(tools), "canary": int(canary is not None)}


def _rotate(vault: Vault, token: bytes) -> bytes:
    try:
        return vault.rotate(token)
    except Exception as exc:  # cryptography's InvalidToken: say which key problem it is, not a traceback
        raise CredentialError("a stored credential does not decrypt with any key of ENGINE_MASTER_KEY") from exc
