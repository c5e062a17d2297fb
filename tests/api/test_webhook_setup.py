"""POST /repos creates the push webhook through GitHub's API; DELETE /repos/{id} deletes it.

GitHub is a local server speaking its REST API's wire format (tests/support/github_api.py),
reached over https by the backend's own HTTP client through GITHUB_API_URL.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import pytest

from tests.api.conftest import PUBLIC_BASE_URL, Api, dead_url
from tests.support.github_api import ADMIN_TOKEN, STATUS_ONLY_TOKEN, FakeGitHub


@pytest.fixture
def github_api(make_api: Callable[..., Api], github: FakeGitHub) -> Callable[..., Api]:
    def make(**overrides: Any) -> Api:
        values = {"github_api_url": github.api_url, "allow_private_repo_hosts": True}
        return make_api(**{**values, **overrides})

    return make


def repo_name() -> str:
    return f"octo-org/iris-{uuid.uuid4().hex[:8]}"


def test_registering_creates_the_push_webhook_and_deleting_the_repo_deletes_it(
    github: FakeGitHub, github_api: Callable[..., Api]
) -> None:
    api = github_api()
    name = repo_name()
    created = api.register(github.repo_url(name), github_token=ADMIN_TOKEN)

    [(hook_id, hook)] = github.hooks[name].items()
    assert created["webhook"] == {"created": True, "id": hook_id, "reason": None}
    assert created["webhook_id"] == hook_id
    assert hook["events"] == ["push"] and hook["active"] is True
    assert hook["config"] == {
        "url": f"{PUBLIC_BASE_URL}/webhook/github",
        "content_type": "json",
        "secret": created["webhook_secret"],
        "insecure_ssl": "0",
    }
    [call] = github.calls
    assert (call.method, call.path, call.status) == ("POST", f"/repos/{name}/hooks", 201)
    assert call.authorization == f"Bearer {ADMIN_TOKEN}"
    assert call.headers["X-GitHub-Api-Version"] == "2022-11-28"
    assert ADMIN_TOKEN not in str(created)
    assert api.client.get(f"/repos/{created['id']}").json()["webhook_id"] == hook_id

    assert api.client.delete(f"/repos/{created['id']}").status_code == 204
    assert github.hooks[name] == {}
    assert (github.calls[-1].method, github.calls[-1].path) == (
        "DELETE",
        f"/repos/{name}/hooks/{hook_id}",
    )


def test_without_admin_rights_the_repo_is_registered_and_the_answer_says_why(
    github: FakeGitHub, github_api: Callable[..., Api]
) -> None:
    api = github_api()
    created = api.register(github.repo_url(repo_name()), github_token=STATUS_ONLY_TOKEN)
    assert created["webhook"]["created"] is False
    assert created["webhook"]["reason"].startswith(
        "GitHub answered 404: the repository's token needs admin:repo_hook"
    )
    assert created["webhook_id"] is None
    assert api.client.get(f"/repos/{created['id']}").status_code == 200
    assert api.client.delete(f"/repos/{created['id']}").status_code == 204
    assert [call.method for call in github.calls] == ["POST"]  # no hook, nothing to delete


def test_github_token_creates_hooks_only_for_the_hosts_it_is_for(
    github: FakeGitHub, github_api: Callable[..., Api]
) -> None:
    listed = github_api(github_token=ADMIN_TOKEN, github_token_hosts=[github.host])
    name = repo_name()
    assert listed.register(github.repo_url(name))["webhook"]["created"] is True
    assert github.calls[-1].authorization == f"Bearer {ADMIN_TOKEN}"

    unlisted = github_api(github_token=ADMIN_TOKEN, github_token_hosts=["github.com"])
    calls = len(github.calls)
    webhook = unlisted.register(github.repo_url(repo_name()))["webhook"]
    assert webhook == {
        "created": False,
        "id": None,
        "reason": f"no token: the repo has none and GITHUB_TOKEN is not for {github.host} "
        "(GITHUB_TOKEN_HOSTS)",
    }
    assert len(github.calls) == calls  # the token never left


def test_githubs_validation_errors_and_an_unreachable_api_are_reported(
    github: FakeGitHub, github_api: Callable[..., Api]
) -> None:
    api = github_api(github_token=ADMIN_TOKEN, github_token_hosts=[github.host])
    name = repo_name()
    first = api.register(github.repo_url(name))
    api.client.delete(f"/repos/{first['id']}")
    github.hooks[name][1] = {"config": {"url": f"{PUBLIC_BASE_URL}/webhook/github"}}
    again = api.register(github.repo_url(name))
    assert again["webhook"]["reason"] == (
        "GitHub answered 422: Validation Failed: Hook already exists on this repository"
    )

    down_url = dead_url().replace("http://", "https://")
    down = github_api(
        github_api_url=f"{down_url}/api/v3",
        github_token=ADMIN_TOKEN,
        github_token_hosts=[down_url.removeprefix("https://")],
    )
    webhook = down.register(f"{down_url}/{repo_name()}")["webhook"]
    assert webhook["created"] is False
    assert webhook["reason"].startswith(f"GitHub API at {down_url}/api/v3 unreachable")


def test_shared_secret_goes_to_github_only_and_hooks_can_be_declined(
    github: FakeGitHub, github_api: Callable[..., Api]
) -> None:
    shared = "org-wide-secret-" + "x" * 20
    api = github_api(github_webhook_secret=shared)
    name = repo_name()
    created = api.register(github.repo_url(name), github_token=ADMIN_TOKEN)
    assert created["webhook_secret"] is None
    assert next(iter(github.hooks[name].values()))["config"]["secret"] == shared

    calls = len(github.calls)
    declined = api.register(
        github.repo_url(repo_name()), github_token=ADMIN_TOKEN, create_webhook=False
    )
    assert declined["webhook"] == {
        "created": False,
        "id": None,
        "reason": "not asked for (create_webhook: false)",
    }
    assert len(github.calls) == calls
