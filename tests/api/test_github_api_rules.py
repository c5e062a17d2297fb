"""Which repositories GITHUB_API_URL serves, which token goes there, and GitHub's answers read."""

from __future__ import annotations

from typing import Any

import pytest

from backend.github_api import (
    DEFAULT_RATE_LIMIT_WAIT,
    OPERATOR_CREDENTIAL,
    REPO_CREDENTIAL,
    GitHubError,
    GitHubRepo,
    error_message,
    github_repo,
    rate_limit_wait,
    web_host,
)
from mlops_core.settings import Settings


def settings(**values: Any) -> Settings:
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


@pytest.mark.parametrize(
    ("api_url", "host"),
    [
        ("https://api.github.com", "github.com"),
        ("https://api.github.com/", "github.com"),
        ("https://ghe.example.com/api/v3", "ghe.example.com"),
        ("https://GHE.example.com:8443/api/v3", "ghe.example.com:8443"),
        ("https://ghe.example.com:443/api/v3", "ghe.example.com"),
        ("https://api.ghe.example.com/api/v3", "api.ghe.example.com"),
    ],
)
def test_the_api_serves_the_repositories_of_one_host(api_url: str, host: str) -> None:
    assert web_host(api_url) == host


def test_a_repos_own_token_goes_to_its_hosts_api_and_wins_over_github_token() -> None:
    target = github_repo(
        "https://github.com/octo-org/iris",
        repo_token="ghp_repo",
        settings=settings(github_token="ghp_operator"),
    )
    assert isinstance(target, GitHubRepo)
    assert (target.owner, target.name, target.token, target.token_source) == (
        "octo-org",
        "iris",
        "ghp_repo",
        REPO_CREDENTIAL,
    )
    assert target.path == "https://api.github.com/repos/octo-org/iris"
    assert "ghp_repo" not in repr(target)


def test_github_token_goes_only_when_the_repos_host_is_a_token_host() -> None:
    listed = github_repo(
        "https://github.com/octo-org/iris", repo_token=None, settings=settings(github_token="t")
    )
    assert isinstance(listed, GitHubRepo) and listed.token_source == OPERATOR_CREDENTIAL
    ghe = settings(github_token="t", github_api_url="https://ghe.example.com/api/v3")
    unlisted = github_repo("https://ghe.example.com/octo/iris", repo_token=None, settings=ghe)
    assert unlisted == (
        "no token: the repo has none and GITHUB_TOKEN is not for ghe.example.com "
        "(GITHUB_TOKEN_HOSTS)"
    )
    assert github_repo("https://github.com/o/r", repo_token=None, settings=settings()) == (
        "no token: the repo has none and GITHUB_TOKEN is not set"
    )


@pytest.mark.parametrize(
    ("repo_url", "api_url", "reason"),
    [
        ("https://gitlab.com/o/r", "https://api.github.com", "gitlab.com is not the host"),
        ("file:///srv/repos/r", "https://api.github.com", "is not a GitHub repository URL"),
        ("https://github.com/o/r", "http://api.github.com", "no token is sent over plain http"),
        ("https://ghe.example.com:8443/o/r", "https://ghe.example.com/api/v3", "is not the host"),
    ],
)
def test_no_api_for_other_hosts_local_repos_or_plain_http(
    repo_url: str, api_url: str, reason: str
) -> None:
    target = github_repo(repo_url, repo_token="secret", settings=settings(github_api_url=api_url))
    assert isinstance(target, str) and reason in target
    assert "secret" not in target


def test_github_error_bodies_read_as_one_line() -> None:
    assert error_message({"message": "Bad credentials", "documentation_url": "x"}) == (
        "Bad credentials"
    )
    body = {
        "message": "Validation Failed",
        "errors": [
            {
                "resource": "Hook",
                "code": "custom",
                "message": "Hook already exists on this repository",
            },
            {"resource": "Status", "field": "state", "code": "invalid"},
        ],
    }
    assert error_message(body) == (
        "Validation Failed: Hook already exists on this repository; Status state invalid"
    )
    assert error_message(["not", "an", "object"]) == "no error message"
    assert str(GitHubError(404, "Not Found")) == "GitHub answered 404: Not Found"


@pytest.mark.parametrize(
    ("status", "headers", "message", "wait"),
    [
        (403, {"x-ratelimit-remaining": "0", "x-ratelimit-reset": "1030"}, "", 30.0),
        (429, {"x-ratelimit-remaining": "0", "x-ratelimit-reset": "1000"}, "", 0.0),
        (403, {"retry-after": "7", "x-ratelimit-remaining": "12"}, "", 7.0),
        (429, {}, "", DEFAULT_RATE_LIMIT_WAIT),
        (403, {}, "You have exceeded a secondary rate limit", DEFAULT_RATE_LIMIT_WAIT),
        (403, {"x-ratelimit-remaining": "4999"}, "Resource not accessible", None),
        (201, {"x-ratelimit-remaining": "0", "x-ratelimit-reset": "1100"}, "", 100.0),
        (201, {"x-ratelimit-remaining": "4999", "x-ratelimit-reset": "1100"}, "", None),
        (502, {"retry-after": "5"}, "", None),
    ],
)
def test_rate_limit_waits_follow_githubs_headers(
    status: int, headers: dict[str, str], message: str, wait: float | None
) -> None:
    assert rate_limit_wait(status, headers, message, now=1000.0) == wait


def test_only_outages_and_rate_limits_are_worth_retrying() -> None:
    assert GitHubError(None, "unreachable").retriable
    assert GitHubError(502, "Server Error").retriable
    assert GitHubError(403, "API rate limit exceeded", wait=30).retriable
    assert not GitHubError(404, "Not Found").retriable
    assert not GitHubError(422, "Validation Failed").retriable
    assert not GitHubError(401, "Bad credentials").retriable
