"""Encryption at rest for repo tokens and webhook secrets.

Fernet (AES-128-CBC + HMAC) from `cryptography` rather than anything hand-rolled. The key comes
from ENCRYPTION_KEY; the local stack generates one into MLOPS_HOME on first start so a fresh
machine works without setup, and a deployment passes its own.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken

from mlops_core.settings import Settings


class SecretsBoxError(RuntimeError):
    """A stored secret cannot be decrypted (wrong or rotated key)."""


def key_file(home: Path) -> Path:
    """Where a generated key is kept: the stack and any process run by hand share it."""
    return home / "secrets" / "encryption.key"


def stored_secret(path: Path, generate: Callable[[], str]) -> str:
    """The secret kept in `path`, generated (0600, created exclusively) on first use.

    Kept rather than generated per start: data stores remember it (encrypted tokens, Redis and
    MLflow users), and any process given the same home finds the same value.
    """
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:  # another process generated it first: use theirs
            pass
        else:
            with os.fdopen(fd, "w") as out:
                out.write(generate() + "\n")
    return path.read_text().strip()


def stored_key(home: Path) -> str:
    """The encryption key kept in `home`, generated on first use."""
    return stored_secret(key_file(home), lambda: Fernet.generate_key().decode())


def _key(settings: Settings) -> bytes:
    if settings.encryption_key is not None:
        return settings.encryption_key.get_secret_value().encode()
    return stored_key(settings.mlops_home).encode()


def encrypt(settings: Settings, plaintext: str) -> str:
    """Encrypt a secret for storage."""
    return Fernet(_key(settings)).encrypt(plaintext.encode()).decode()


def decrypt(settings: Settings, token: str) -> str:
    """Decrypt a stored secret."""
    try:
        return Fernet(_key(settings)).decrypt(token.encode()).decode()
    except InvalidToken as exc:
        raise SecretsBoxError("stored secret cannot be decrypted with ENCRYPTION_KEY") from exc
