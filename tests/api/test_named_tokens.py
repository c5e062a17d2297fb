"""API_TOKENS: admin tokens with names, so the history says who changed what is served."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from mlops_core.access_tokens import ADMIN, PREDICT, READ, actor, open_warning, refusal
from mlops_core.settings import Settings


def settings(**values: str) -> Settings:
    return Settings(_env_file=None, **values)  # type: ignore[arg-type]


def test_a_named_token_opens_what_the_admin_token_opens_and_names_its_holder() -> None:
    named = settings(api_tokens="alice:a-secret-1, ci:c-secret-2", api_read_token="reader")
    for guard in (ADMIN, READ):
        assert refusal(named, guard, "a-secret-1") is None
        assert refusal(named, guard, "c-secret-2") is None
    assert refusal(named, ADMIN, "reader") is not None  # the read token changes nothing
    assert refusal(named, ADMIN, "alice") is not None  # a name is not a token
    assert refusal(named, PREDICT, None) is None  # PREDICT_TOKEN unset: open as before
    assert (actor(named, "a-secret-1"), actor(named, "c-secret-2")) == ("alice", "ci")
    # Only named tokens: the admin guard is closed, and nothing warns that it is open.
    assert refusal(named, ADMIN, None) is not None
    warning = open_warning(named, (ADMIN, READ), "here") or ""
    assert "API_TOKEN " not in warning


def test_the_existing_api_token_keeps_working_as_api() -> None:
    both = settings(api_token="admin-secret", api_tokens="alice:a-secret-1")
    assert refusal(both, ADMIN, "admin-secret") is None
    assert actor(both, "admin-secret") == "api"
    assert actor(settings(), None) == "api"  # an open admin guard


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("alice:a-secret-1,bob", "API_TOKENS pair 2 is not `name:token`"),
        ("alice:", "API_TOKENS pair 1 is not `name:token`"),
        ("al ice:a-secret-1", "API_TOKENS pair 1: the name must be"),
        ("alice:a-secret-1,alice:a-secret-2", "API_TOKENS names 'alice' twice"),
    ],
)
def test_a_malformed_api_tokens_stops_the_start_without_repeating_a_token(
    value: str, message: str
) -> None:
    with pytest.raises(ValidationError) as caught:
        settings(api_tokens=value)
    assert message in str(caught.value)
    assert "a-secret" not in str(caught.value)
