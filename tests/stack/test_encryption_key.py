"""The encryption key generated for a home is one key, whoever generates it first."""

from __future__ import annotations

from pathlib import Path

from mlops_core import secrets_box
from mlops_core.settings import Settings


def test_a_process_without_encryption_key_uses_the_key_the_stack_hands_its_services(
    tmp_path: Path,
) -> None:
    """Regression: the fallback once kept its own key file beside the stack's, so a backend
    started by hand could not read the tokens a stack-run backend had stored."""
    by_hand = Settings(mlops_home=tmp_path, encryption_key=None)
    sealed = secrets_box.encrypt(by_hand, "ghp_token")

    stack_key = secrets_box.stored_key(tmp_path)  # what `make up` passes as ENCRYPTION_KEY
    from_stack = Settings(mlops_home=tmp_path / "elsewhere", encryption_key=stack_key)
    assert secrets_box.decrypt(from_stack, sealed) == "ghp_token"
    assert secrets_box.key_file(tmp_path).stat().st_mode & 0o077 == 0
    assert list(tmp_path.rglob("*.key")) == [secrets_box.key_file(tmp_path)]
