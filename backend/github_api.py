"""GitHub's REST API as the backend uses it: the push webhook and commit statuses.

Which repositories it serves: GITHUB_API_URL is one GitHub, which hosts the repositories of one
host (`web_host`): github.com for https://api.github.com, and for GitHub Enterprise
(https://ghe.example.com/api/v3) the API's own host. A repository on any other host has no API
here: no webhook is created for it and no status is posted.

Which token goes there (`github_repo`), following the fetch's rules (worker/phases/fetch.py):
the repo's own token was given for the repo's host, so it goes to that host's API; GITHUB_TOKEN
goes there only when the repo's host is in GITHUB_TOKEN_HOSTS. A token is sent over https only,
and never appears in an error message.

Errors are GitHub's documented shape (`{"message", "errors": [...], "documentation_url"}`);
`GitHubError` keeps the status and a readable message, and says how long GitHub asked to wait
when it refused for a rate limit (`rate_limit_wait`).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final
from urllib.parse import quote, urlsplit

import httpx

from mlops_core.settings import Settings

API_VERSION: Final = "2022-11-28"
USER_AGENT: Final = "notebook-mlops"
TIMEOUT: Final = httpx.Timeout(10.0)
REPO_CREDENTIAL: Final = "the repository's token"
OPERATOR_CREDENTIAL: Final = "GITHUB_TOKEN"
# How long to wait after a rate-limit refusal that names no time (GitHub's advice: a minute).
DEFAULT_RATE_LIMIT_WAIT: Final = 60.0


@dataclass(frozen=True)
class GitHubRepo:
    """A repository as GitHub's API names it, and the token that may be sent for it."""

    api_url: str
    owner: str
    name: str
    token_source: str
    token: str = field(repr=False)

    @property
    def path(self) -> str:
        """`/repos/{owner}/{repo}` under the API."""
        return f"{self.api_url}/repos/{quote(self.owner, safe='')}/{quote(self.name, safe='')}"

    @property
    def full_name(self) -> str:
        return f"{self.owner}/{self.name}"


def _host(netloc: str, scheme: str) -> str:
    """host[:port] in lower case, without the scheme's default port."""
    host = netloc.rsplit("@", 1)[-1].lower()
    return host.removesuffix(":443" if scheme == "https" else ":80")


def web_host(api_url: str) -> str:
    """The host whose repositories GITHUB_API_URL serves (`api.github.com` → `github.com`)."""
    parts = urlsplit(api_url)
    host = _host(parts.netloc, parts.scheme)
    if host.startswith("api.") and parts.path.strip("/") == "":
        return host.removeprefix("api.")
    return host


def github_repo(repo_url: str, *, repo_token: str | None, settings: Settings) -> GitHubRepo | str:
    """The repository on GITHUB_API_URL with the token that may go there, or why there is none."""
    parts = urlsplit(repo_url)
    api_url = settings.github_api_url.rstrip("/")
    if parts.scheme != "https":
        return f"{repo_url} is not a GitHub repository URL"
    host = _host(parts.netloc, parts.scheme)
    if host != web_host(api_url):
        return f"{host} is not the host GITHUB_API_URL ({api_url}) serves ({web_host(api_url)})"
    owner, _, name = parts.path.strip("/").partition("/")
    if not owner or not name or "/" in name:
        return f"{repo_url} does not name an owner and a repository"
    if urlsplit(api_url).scheme != "https":
        return f"GITHUB_API_URL {api_url} is not https: no token is sent over plain http"
    if repo_token:
        return GitHubRepo(api_url, owner, name, REPO_CREDENTIAL, repo_token)
    github_token = settings.github_token.get_secret_value() if settings.github_token else ""
    if not github_token:
        return "no token: the repo has none and GITHUB_TOKEN is not set"
    if host not in settings.github_token_hosts:
        return (
            f"no token: the repo has none and GITHUB_TOKEN is not for {host} (GITHUB_TOKEN_HOSTS)"
        )
    return GitHubRepo(api_url, owner, name, OPERATOR_CREDENTIAL, github_token)


def error_message(body: Any) -> str:
    """GitHub's error body as one line: its message, then each entry of `errors`."""
    if not isinstance(body, Mapping):
        return "no error message"
    message = str(body.get("message") or "no error message")
    details = []
    for entry in body.get("errors") or []:
        if isinstance(entry, Mapping):
            text = entry.get("message") or " ".join(
                str(entry[key]) for key in ("resource", "field", "code") if entry.get(key)
            )
            details.append(str(text))
        elif entry:
            details.append(str(entry))
    return f"{message}: {'; '.join(details)}" if details else message


def rate_limit_wait(
    status: int, headers: Mapping[str, str], message: str, now: float
) -> float | None:
    """Seconds GitHub asks the caller to wait before the next call, or None.

    After GitHub's documented rules: `retry-after` (seconds) first; a spent primary limit
    (`x-ratelimit-remaining: 0`) until `x-ratelimit-reset` (epoch seconds), also on a response
    that succeeded, since the next call would fail; a 429, or a 403 naming a rate limit, that
    says neither: a minute.
    """
    retry_after = headers.get("retry-after")
    if retry_after is not None and status in (403, 429):
        try:
            return max(0.0, float(retry_after))
        except ValueError:
            return DEFAULT_RATE_LIMIT_WAIT
    if headers.get("x-ratelimit-remaining") == "0":
        try:
            return max(0.0, float(headers.get("x-ratelimit-reset", "")) - now)
        except ValueError:
            return DEFAULT_RATE_LIMIT_WAIT
    if status == 429 or (status == 403 and "rate limit" in message.lower()):
        return DEFAULT_RATE_LIMIT_WAIT
    return None


class GitHubError(Exception):
    """A call GitHub refused (status set) or that did not reach it (status None)."""

    def __init__(self, status: int | None, message: str, wait: float | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        # Seconds GitHub asked to wait (rate limit), if it did.
        self.wait = wait

    @property
    def retriable(self) -> bool:
        """Whether the same call may succeed later: unreachable, a 5xx, or a rate limit."""
        return self.status is None or self.status >= 500 or self.wait is not None

    def __str__(self) -> str:
        if self.status is None:
            return self.message
        return f"GitHub answered {self.status}: {self.message}"


class GitHubApi:
    """Calls to GitHub's REST API over one connection pool (thread-safe)."""

    def __init__(self, transport: httpx.BaseTransport | None = None) -> None:
        self._client = httpx.Client(timeout=TIMEOUT, transport=transport)

    def close(self) -> None:
        self._client.close()

    def _call(
        self, method: str, repo: GitHubRepo, path: str, body: dict[str, Any] | None = None
    ) -> httpx.Response:
        headers = {
            "Accept": "application/vnd.github+json",
            "Authorization": f"Bearer {repo.token}",
            "User-Agent": USER_AGENT,
            "X-GitHub-Api-Version": API_VERSION,
        }
        try:
            response = self._client.request(method, repo.path + path, json=body, headers=headers)
        except httpx.HTTPError as exc:
            raise GitHubError(
                None, f"GitHub API at {repo.api_url} unreachable: {type(exc).__name__}: {exc}"
            ) from None
        if response.is_success:
            return response
        try:
            message = error_message(response.json())
        except ValueError:
            message = response.reason_phrase or "no error message"
        raise GitHubError(
            response.status_code,
            message,
            rate_limit_wait(response.status_code, response.headers, message, time.time()),
        )

    def create_push_hook(self, repo: GitHubRepo, *, url: str, secret: str) -> int:
        """Create the push webhook (JSON, signed with `secret`); return its id."""
        response = self._call(
            "POST",
            repo,
            "/hooks",
            {
                "name": "web",
                "active": True,
                "events": ["push"],
                "config": {
                    "url": url,
                    "content_type": "json",
                    "secret": secret,
                    "insecure_ssl": "0",
                },
            },
        )
        hook_id = response.json().get("id")
        if not isinstance(hook_id, int):
            raise GitHubError(response.status_code, "the created hook has no id")
        return hook_id

    def delete_hook(self, repo: GitHubRepo, hook_id: int) -> bool:
        """Delete a webhook; False when GitHub no longer has it."""
        try:
            self._call("DELETE", repo, f"/hooks/{hook_id}")
        except GitHubError as exc:
            if exc.status == 404:
                return False
            raise
        return True

    def create_status(
        self,
        repo: GitHubRepo,
        sha: str,
        *,
        state: str,
        description: str,
        context: str,
        target_url: str,
    ) -> float | None:
        """POST /repos/{owner}/{repo}/statuses/{sha}; return how long GitHub asks to pause
        before the next call (its rate limit is spent), if it does."""
        response = self._call(
            "POST",
            repo,
            f"/statuses/{sha}",
            {
                "state": state,
                "description": description,
                "context": context,
                "target_url": target_url,
            },
        )
        return rate_limit_wait(response.status_code, response.headers, "", time.time())
