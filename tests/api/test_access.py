"""Access: API_TOKEN guards every state-changing REST call; the webhook relies on its signature."""

from __future__ import annotations

import logging
from collections.abc import Callable

import pytest

from tests.api.conftest import NOTEBOOK, Api, github_url
from tests.support.github import delivery, push_payload

TOKEN = "s3cret-api-token"


def test_with_token_state_changes_need_the_bearer_token(make_api: Callable[..., Api]) -> None:
    api = make_api(api_token=TOKEN)
    body = {"github_url": github_url()}

    missing = api.client.post("/repos", json=body)
    assert missing.status_code == 401
    assert "Authorization: Bearer" in missing.json()["detail"]
    assert missing.headers["WWW-Authenticate"] == "Bearer"
    for header in (f"Bearer {TOKEN}x", f"Basic {TOKEN}", TOKEN, "Bearer "):
        refused = api.client.post("/repos", json=body, headers={"Authorization": header})
        assert refused.status_code == 401, header
        assert "invalid API token" in refused.json()["detail"]
    assert api.client.get("/repos").json() == []

    repo = api.register(body["github_url"])  # sends the right token
    guarded = [
        ("post", f"/repos/{repo['id']}/trigger"),
        ("post", "/pipelines/1/cancel"),
        ("post", "/pipelines/1/retry"),
        ("delete", f"/repos/{repo['id']}"),
    ]
    for method, path in guarded:
        assert getattr(api.client, method)(path).status_code == 401, path
    assert len(api.pipelines()) == 0

    # Reads stay open; the webhook is guarded by its signature, not by the token.
    assert api.client.get("/repos").status_code == 200
    assert api.client.get("/pipelines").status_code == 200
    push = push_payload(repo["github_url"], modified=[NOTEBOOK])
    assert api.deliver(delivery(push, repo["webhook_secret"])).status_code == 202

    headers = api.auth_headers()
    assert api.client.post(f"/repos/{repo['id']}/trigger", headers=headers).status_code == 202
    assert api.client.post("/pipelines/1/cancel", headers=headers).status_code == 200
    assert api.client.delete(f"/repos/{repo['id']}", headers=headers).status_code == 204


def test_without_token_calls_are_open_and_a_warning_is_logged(
    make_api: Callable[..., Api], caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="backend.auth"):
        api = make_api(api_token=None)
    assert any("API_TOKEN is not set" in record.getMessage() for record in caplog.records)
    repo = api.register()
    assert api.client.post(f"/repos/{repo['id']}/trigger").status_code == 202


def test_no_warning_when_a_token_is_set(
    make_api: Callable[..., Api], caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="backend.auth"):
        make_api(api_token=TOKEN)
    assert not any("API_TOKEN" in record.getMessage() for record in caplog.records)
