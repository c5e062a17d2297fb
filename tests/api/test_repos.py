"""Repos API: registration, normalisation, validation, duplicates, secrets kept secret."""

from __future__ import annotations

import logging
from collections.abc import Callable

import pytest
from sqlalchemy import select

from mlops_core import secrets_box
from mlops_core.database import session_scope
from mlops_core.schema import Pipeline, Repo
from tests.api.conftest import NOTEBOOK, PUBLIC_BASE_URL, Api, github_url


def test_register_returns_repo_with_generated_secret_once(api: Api) -> None:
    created = api.register("https://github.com/Octo-Org/Iris-Demo.git", branch="main")

    assert created["github_url"] == "https://github.com/octo-org/iris-demo"
    assert created["branch"] == "main"
    assert created["notebook_path"] == NOTEBOOK
    assert created["has_token"] is False
    assert created["webhook_url"] == f"{PUBLIC_BASE_URL}/webhook/github"
    assert created["created_at"].endswith(("Z", "+00:00"))
    secret = created["webhook_secret"]
    assert len(secret) >= 32

    shown = api.client.get(f"/repos/{created['id']}")
    assert shown.status_code == 200
    assert "webhook_secret" not in shown.json()
    listed = api.client.get("/repos").json()
    assert [repo["id"] for repo in listed] == [created["id"]]
    assert secret not in shown.text + api.client.get("/repos").text
    assert api.register()["webhook_secret"] != secret  # generated per repo


def test_given_secret_and_token_are_stored_encrypted_and_never_shown(
    api: Api, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    token = "ghp_" + "T0ken" * 8
    secret = "my-webhook-secret-" + "s" * 20
    created = api.register(github_token=token, webhook_secret=secret)

    assert created["webhook_secret"] == secret
    assert created["has_token"] is True
    assert token not in str(created)
    with session_scope(api.database_url) as session:
        row = session.get(Repo, created["id"])
        assert row is not None
        assert token not in row.token_encrypted  # type: ignore[operator]
        assert secret not in row.webhook_secret_encrypted
        assert secrets_box.decrypt(api.settings, row.token_encrypted) == token  # type: ignore[arg-type]
        assert secrets_box.decrypt(api.settings, row.webhook_secret_encrypted) == secret
    for path in ("/repos", f"/repos/{created['id']}"):
        text = api.client.get(path).text
        assert token not in text and secret not in text
    assert all(token not in r.getMessage() and secret not in r.getMessage() for r in caplog.records)


def test_shared_secret_applies_when_none_given_and_is_never_shown(
    make_api: Callable[..., Api],
) -> None:
    api = make_api(github_webhook_secret="org-wide-secret-123")
    response = api.client.post("/repos", json={"github_url": github_url()})
    assert response.status_code == 201, response.text
    created = response.json()
    assert "org-wide-secret-123" not in response.text
    assert created["webhook_secret"] is None
    assert created["webhook_secret_source"] == "shared GITHUB_WEBHOOK_SECRET"
    with session_scope(api.database_url) as session:
        row = session.get(Repo, created["id"])
        assert row is not None
        assert secrets_box.decrypt(api.settings, row.webhook_secret_encrypted) == (
            "org-wide-secret-123"
        )
    own = api.register(webhook_secret="own-one")
    assert (own["webhook_secret"], own["webhook_secret_source"]) == ("own-one", "given")
    generated = make_api().register()
    assert generated["webhook_secret_source"] == "generated"
    assert len(generated["webhook_secret"]) >= 32


@pytest.mark.parametrize(
    "spelling",
    [
        "https://github.com/Octo-Org/Model",
        "https://github.com/octo-org/model.git",
        "git@github.com:octo-org/model.git",
        "ssh://git@github.com/octo-org/model.git",
        "HTTPS://GITHUB.COM/OCTO-ORG/MODEL/",
    ],
)
def test_every_spelling_of_a_registered_repo_is_a_duplicate(api: Api, spelling: str) -> None:
    first = api.register("https://github.com/octo-org/model")
    response = api.client.post("/repos", json={"github_url": spelling})
    assert response.status_code == 409
    detail = response.json()["detail"]
    assert detail.startswith("github_url:")
    assert f"repo {first['id']}" in detail
    assert len(api.client.get("/repos").json()) == 1


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("notebook_path", "/etc/train.ipynb", "relative"),
        ("notebook_path", "notebooks/../../train.ipynb", ".."),
        ("notebook_path", "notebooks/train.py", ".ipynb"),
        ("notebook_path", "", "empty"),
        ("branch", "feature..x", "branch"),
        ("branch", "bad name", "branch"),
        ("github_url", "http://github.com/o/r", "https"),
        ("github_url", "https://github.com/only-owner", "owner and a repository"),
        ("github_url", "https://user:pw@github.com/o/r", "credentials"),
        ("github_url", "not a url", "github.com/owner/repo"),
        ("github_token", "   ", "blank"),
    ],
)
def test_invalid_fields_are_422_naming_the_field(
    api: Api, field: str, value: str, message: str
) -> None:
    body = {"github_url": github_url(), field: value}
    response = api.client.post("/repos", json=body)
    assert response.status_code == 422, response.text
    errors = response.json()["detail"]
    assert [error["loc"] for error in errors] == [["body", field]]
    assert message in errors[0]["msg"]
    assert api.client.get("/repos").json() == []


def test_missing_url_and_unknown_fields_are_named_without_echoing_secrets(api: Api) -> None:
    response = api.client.post(
        "/repos", json={"github_token": "ghp_do_not_echo", "repo": "https://github.com/o/r"}
    )
    assert response.status_code == 422
    locations = {tuple(error["loc"]) for error in response.json()["detail"]}
    assert locations == {("body", "github_url"), ("body", "repo")}
    assert "ghp_do_not_echo" not in response.text


def test_local_repos_need_allow_local_repos(make_api: Callable[..., Api], tmp_path) -> None:  # type: ignore[no-untyped-def]
    closed = make_api(allow_local_repos=False)
    refused = closed.client.post("/repos", json={"github_url": str(tmp_path / "repo")})
    assert refused.status_code == 422
    assert "ALLOW_LOCAL_REPOS" in refused.json()["detail"][0]["msg"]

    opened = make_api(allow_local_repos=True)
    created = opened.register(f"{tmp_path}/repo/")
    assert created["github_url"] == (tmp_path / "repo").as_uri()
    again = opened.client.post("/repos", json={"github_url": (tmp_path / "repo").as_uri()})
    assert again.status_code == 409


def test_get_and_delete(api: Api) -> None:
    created = api.register(branch="refs/heads/dev", notebook_path="./models/train.ipynb")
    assert (created["branch"], created["notebook_path"]) == ("dev", "models/train.ipynb")
    repo_id = created["id"]
    triggered = api.client.post(f"/repos/{repo_id}/trigger")
    assert triggered.status_code == 202
    listed = api.client.get("/repos").json()[0]
    assert listed["last_pipeline"]["id"] == triggered.json()["pipeline_id"]

    assert api.client.delete(f"/repos/{repo_id}").status_code == 204
    assert api.client.get(f"/repos/{repo_id}").status_code == 404
    assert api.client.delete(f"/repos/{repo_id}").status_code == 404
    assert api.client.get("/repos/999999").json()["detail"] == "repo 999999 not found"
    with session_scope(api.database_url) as session:
        kept = session.scalars(select(Pipeline)).one()
    assert kept.repo_id is None  # history stays, detached from the deleted repo
    assert kept.repo_url == created["github_url"]
    # The same URL can be registered again once deleted.
    assert api.register(created["github_url"])["github_url"] == created["github_url"]


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("https://169.254.169.254/latest/meta-data", "link-local"),
        ("https://127.0.0.1:8443/o/r", "loopback"),
        ("https://10.1.2.3/o/r", "private-network"),
        ("https://172.20.0.1/o/r", "private-network"),
        ("https://192.168.0.1/o/r", "private-network"),
        ("https://[fc00::5]/o/r", "private-network"),
        ("https://[fe80::1]/o/r", "link-local"),
        ("https://localhost/o/r", "local network"),
        ("https://140.82.112.3/o/r", "IP address"),
    ],
)
def test_private_hosts_and_ip_literals_are_refused(api: Api, url: str, problem: str) -> None:
    response = api.client.post("/repos", json={"github_url": url})
    assert response.status_code == 422, response.text
    [error] = response.json()["detail"]
    assert error["loc"] == ["body", "github_url"]
    assert problem in error["msg"] and "ALLOW_PRIVATE_REPO_HOSTS" in error["msg"]
    assert api.client.get("/repos").json() == []


def test_allow_private_repo_hosts_accepts_them_intact(make_api: Callable[..., Api]) -> None:
    api = make_api(allow_private_repo_hosts=True)
    assert api.register("https://[FD00::1]:8443/Team/Model.git")["github_url"] == (
        "https://[fd00::1]:8443/team/model"
    )
    assert api.register("https://10.1.2.3/o/r")["github_url"] == "https://10.1.2.3/o/r"
    assert api.register("ssh://git@git.corp.example:2222/org/repo.git")["github_url"] == (
        "ssh://git@git.corp.example:2222/org/repo"
    )
