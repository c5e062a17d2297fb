"""Encryption at rest for repo tokens and webhook secrets.

Fernet (AES-128-CBC + HMAC) from `cryptography` rather than anything hand-rolled. The key comes
from ENCRYPTION_KEY; the local stack generates one into MLOPS_HOME on first start so a fresh
machine works without setup, and a deployment passes its own.
"""

from __future__ import annotations

from cryptography.fernet import Fernet, InvalidToken

from mlops_core.settings import Settings


class SecretsBoxError(RuntimeError):
    """A stored secret cannot be decrypted (wrong or rotated key)."""


def _key(settings: Settings) -> bytes:
    if settings.encryption_key is not None:
        return settings.encryption_key.get_secret_value().encode()
    key_file = settings.mlops_home / "encryption.key"
    if key_file.exists():
        return key_file.read_bytes().strip()
    key_file.parent.mkdir(parents=True, exist_ok=True)
    key = Fernet.generate_key()
    key_file.touch(mode=0o600)
    key_file.write_bytes(key)
    return key


def encrypt(settings: Settings, plaintext: str) -> str:
    """Encrypt a secret for storage."""
    return Fernet(_key(settings)).encrypt(plaintext.encode()).decode()


def decrypt(settings: Settings, token: str) -> str:
    """Decrypt a stored secret."""
    try:
        return Fernet(_key(settings)).decrypt(token.encode()).decode()
    except InvalidToken as exc:
        raise SecretsBoxError("stored secret cannot be decrypted with ENCRYPTION_KEY") from exc
