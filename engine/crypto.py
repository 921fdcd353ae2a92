"""Channel credentials at rest: Fernet (AES-128-CBC + HMAC) with key rotation via MultiFernet.

ENGINE_MASTER_KEY holds one or more comma-separated Fernet keys. The first encrypts; every key
decrypts, so a new key can be put first, `engine rotate-key` re-encrypts every row, and the old key
is then dropped from the list.
"""

from __future__ import annotations

from typing import Any

import orjson
from cryptography.fernet import Fernet, InvalidToken, MultiFernet


class CredentialError(Exception):
    """The master key is missing or cannot decrypt a stored credential."""


def generate_key() -> str:
    return Fernet.generate_key().decode()


class Vault:
    def __init__(self, master_key: str) -> None:
        keys = [k.strip() for k in master_key.split(",") if k.strip()]
        if not keys:
            raise CredentialError("ENGINE_MASTER_KEY is not set: create one with `engine gen-key` and keep it secret")
        try:
            self._fernet = MultiFernet([Fernet(k.encode()) for k in keys])
        except ValueError:
            raise CredentialError("ENGINE_MASTER_KEY holds a value that is not a Fernet key") from None

    def encrypt(self, secrets: dict[str, Any]) -> bytes:
        return self._fernet.encrypt(orjson.dumps(secrets))

    def decrypt(self, token: bytes | None) -> dict[str, str]:
        if not token:
            return {}
        try:
            return orjson.loads(self._fernet.decrypt(bytes(token)))  # type: ignore[no-any-return]
        except InvalidToken:
            raise CredentialError("a stored credential does not decrypt with ENGINE_MASTER_KEY") from None

    def encrypt_unless_same(self, old: bytes | None, secrets: dict[str, Any]) -> bytes:
        """The stored token when it already holds these secrets, else a new one. Fernet tokens
        differ on every encryption, so this is what keeps a repeated load from changing rows (and
        from waking every worker to reload). A token the current keys cannot read is replaced."""
        if old is not None:
            try:
                if self.decrypt(old) == secrets:
                    return bytes(old)
            except CredentialError:
                pass
        return self.encrypt(secrets)

    def rotate(self, token: bytes) -> bytes:
        """Re-encrypt under the first (newest) key."""
        return self._fernet.rotate(bytes(token))
