"""A small GitHub Enterprise: its REST API under /api/v3, and git over smart HTTP elsewhere.

github.com cannot be reached here. This server answers what the platform calls, in GitHub's
documented wire format (REST API version 2022-11-28):
- `POST /repos/{owner}/{repo}/hooks` → 201 with the hook object (its secret shown as
  `********`), 422 `Validation Failed` with `Hook already exists on this repository` for a
  second hook with the same URL, 404 `Not Found` for a token without `admin:repo_hook` (GitHub
  hides a repository from a token that may not administer it);
- `DELETE /repos/{owner}/{repo}/hooks/{id}` → 204, or 404 for an unknown hook;
- `POST /repos/{owner}/{repo}/statuses/{sha}` → 201 with the status object; 422 for a state
  GitHub does not know; 404 for a token without `repo:status`;
- 401 `Bad credentials` for an unknown token; every answer carries the `x-ratelimit-*` headers,
  and a spent limit answers 403 `API rate limit exceeded` with `x-ratelimit-remaining: 0`.
Error bodies are `{"message", "documentation_url", "status"}` (plus `errors` for 422).

Tests script failures: `fail_next(n, status)` answers the next n calls with that status (a 502
is GitHub's usual outage answer), `exhaust_rate_limit(seconds)` spends the rate limit until
then. The paths outside /api/v3 serve the bare repositories under `root` with `git
http-backend`, so one host name is both a repository URL and its API, as on GitHub Enterprise.
"""

from __future__ import annotations

import itertools
import json
import re
import ssl
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from tests.pipeline.git_http_server import TlsCertificate, serve_git

API_PREFIX = "/api/v3"
DOCS = "https://docs.github.com/rest"
HOOK_SCOPE = "admin:repo_hook"
STATUS_SCOPE = "repo:status"
RATE_LIMIT = 5000
_HOOKS = re.compile(r"^/repos/([^/]+)/([^/]+)/hooks$")
_HOOK = re.compile(r"^/repos/([^/]+)/([^/]+)/hooks/(\d+)$")
_STATUSES = re.compile(r"^/repos/([^/]+)/([^/]+)/statuses/([0-9a-f]{40,64})$")
STATES = ("error", "failure", "pending", "success")
# Tokens tests hand out: one that may administer hooks and post statuses, one statuses only.
ADMIN_TOKEN = "ghp_admin_" + "a" * 30
STATUS_ONLY_TOKEN = "ghp_status_" + "s" * 30


def fake_github_tokens() -> dict[str, set[str]]:
    """The scopes of ADMIN_TOKEN and STATUS_ONLY_TOKEN."""
    return {ADMIN_TOKEN: {HOOK_SCOPE, STATUS_SCOPE}, STATUS_ONLY_TOKEN: {STATUS_SCOPE}}


@dataclass
class ApiCall:
    """One request the API received."""

    method: str
    path: str
    headers: dict[str, str]
    body: Any
    status: int

    @property
    def authorization(self) -> str | None:
        return self.headers.get("Authorization")


@dataclass
class FakeGitHub:
    """The server's state: tokens and their scopes, hooks, statuses, scripted failures."""

    root: Path
    tls: TlsCertificate
    tokens: dict[str, set[str]] = field(default_factory=dict)
    hooks: dict[str, dict[int, dict[str, Any]]] = field(default_factory=dict)
    statuses: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    calls: list[ApiCall] = field(default_factory=list)
    _failures: list[int] = field(default_factory=list)
    _limit_until: float = 0.0
    _ids: itertools.count = field(default_factory=lambda: itertools.count(417265832))
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                """Quiet."""

            def do_GET(self) -> None:
                self._route()

            def do_POST(self) -> None:
                self._route()

            def do_DELETE(self) -> None:
                self._route()

            def _route(self) -> None:
                if not self.path.startswith(API_PREFIX + "/"):
                    serve_git(self, fake.root)
                    return
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                try:
                    body = json.loads(raw) if raw else None
                except ValueError:
                    body = None
                path = self.path.removeprefix(API_PREFIX)
                status, answer, extra = fake.answer(
                    self.command, path, self.headers.get("Authorization"), body
                )
                with fake._lock:
                    fake.calls.append(ApiCall(self.command, path, dict(self.headers), body, status))
                payload = b"" if answer is None else json.dumps(answer).encode()
                self.send_response(status)
                for name, value in {**fake.rate_limit_headers(), **extra}.items():
                    self.send_header(name, value)
                self.send_header("X-GitHub-Api-Version-Selected", "2022-11-28")
                if payload:
                    self.send_header("Content-Type", "application/json; charset=utf-8")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self.tls.cert_path, self.tls.key_path)
        self._httpd.socket = context.wrap_socket(self._httpd.socket, server_side=True)
        self.port = self._httpd.server_address[1]
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    # --- what tests use ------------------------------------------------------------------

    @property
    def host(self) -> str:
        """host:port: where the repositories live (GITHUB_TOKEN_HOSTS names it)."""
        return f"127.0.0.1:{self.port}"

    @property
    def api_url(self) -> str:
        """GITHUB_API_URL for this server."""
        return f"https://{self.host}{API_PREFIX}"

    def repo_url(self, full_name: str) -> str:
        return f"https://{self.host}/{full_name}"

    def fail_next(self, count: int, status: int = 502) -> None:
        """Answer the next `count` calls with `status` (and GitHub's error body)."""
        with self._lock:
            self._failures.extend([status] * count)

    def exhaust_rate_limit(self, seconds: float) -> None:
        """Spend the rate limit for `seconds`: calls until then answer 403."""
        self._limit_until = time.time() + seconds

    def statuses_of(self, full_name: str, sha: str) -> list[dict[str, Any]]:
        """The statuses posted for a commit, oldest first."""
        with self._lock:
            return list(self.statuses.get(f"{full_name}@{sha}", []))

    def rate_limit_headers(self) -> dict[str, str]:
        spent = time.time() < self._limit_until
        reset = int(self._limit_until if spent else time.time() + 3600)
        return {
            "x-ratelimit-limit": str(RATE_LIMIT),
            "x-ratelimit-remaining": "0" if spent else str(RATE_LIMIT - 1),
            "x-ratelimit-used": str(RATE_LIMIT if spent else 1),
            "x-ratelimit-reset": str(reset),
            "x-ratelimit-resource": "core",
        }

    def __enter__(self) -> FakeGitHub:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    # --- GitHub's answers ------------------------------------------------------------------

    def answer(
        self, method: str, path: str, authorization: str | None, body: Any
    ) -> tuple[int, Any, dict[str, str]]:
        """(status, JSON body or None, extra headers) for one API call."""
        with self._lock:
            scripted = self._failures.pop(0) if self._failures else None
        if scripted is not None:
            return scripted, _error(scripted, "Server Error" if scripted >= 500 else "Error"), {}
        token = (authorization or "").removeprefix("Bearer ").removeprefix("token ").strip()
        if token not in self.tokens:
            return 401, _error(401, "Bad credentials"), {}
        if time.time() < self._limit_until:
            return 403, _error(403, "API rate limit exceeded for user ID 1."), {}
        scopes = self.tokens[token]
        if method == "POST" and (match := _HOOKS.match(path)):
            if HOOK_SCOPE not in scopes:
                return 404, _error(404, "Not Found"), {}
            return self._create_hook(f"{match[1]}/{match[2]}", body)
        if method == "DELETE" and (match := _HOOK.match(path)):
            if HOOK_SCOPE not in scopes:
                return 404, _error(404, "Not Found"), {}
            with self._lock:
                removed = self.hooks.get(f"{match[1]}/{match[2]}", {}).pop(int(match[3]), None)
            return (204, None, {}) if removed else (404, _error(404, "Not Found"), {})
        if method == "POST" and (match := _STATUSES.match(path)):
            if STATUS_SCOPE not in scopes:
                return 404, _error(404, "Not Found"), {}
            return self._create_status(f"{match[1]}/{match[2]}", match[3], body)
        return 404, _error(404, "Not Found"), {}

    def _create_hook(self, full_name: str, body: Any) -> tuple[int, Any, dict[str, str]]:
        config = (body or {}).get("config") or {}
        if not config.get("url"):
            return 422, _invalid("Hook", "url", "missing_field"), {}
        with self._lock:
            existing = self.hooks.setdefault(full_name, {})
            if any(hook["config"]["url"] == config["url"] for hook in existing.values()):
                return (
                    422,
                    _invalid("Hook", None, "custom", "Hook already exists on this repository"),
                    {},
                )
            hook_id = next(self._ids)
            hook = {
                "type": "Repository",
                "id": hook_id,
                "name": body.get("name", "web"),
                "active": body.get("active", True),
                "events": body.get("events", ["push"]),
                "config": dict(config),
                "updated_at": "2026-12-01T09:00:00Z",
                "created_at": "2026-12-01T09:00:00Z",
                "url": f"{self.api_url}/repos/{full_name}/hooks/{hook_id}",
                "test_url": f"{self.api_url}/repos/{full_name}/hooks/{hook_id}/test",
                "ping_url": f"{self.api_url}/repos/{full_name}/hooks/{hook_id}/pings",
                "deliveries_url": f"{self.api_url}/repos/{full_name}/hooks/{hook_id}/deliveries",
                "last_response": {"code": None, "status": "unused", "message": None},
            }
            existing[hook_id] = hook
        shown = {**hook, "config": {**hook["config"], "secret": "********"}}
        return 201, shown, {"Location": hook["url"]}

    def _create_status(
        self, full_name: str, sha: str, body: Any
    ) -> tuple[int, Any, dict[str, str]]:
        body = body or {}
        if body.get("state") not in STATES:
            return 422, _invalid("Status", "state", "invalid"), {}
        with self._lock:
            posted = self.statuses.setdefault(f"{full_name}@{sha}", [])
            status = {
                "url": f"{self.api_url}/repos/{full_name}/statuses/{sha}",
                "id": next(self._ids),
                "node_id": "SC_kwDOAAAAAAAAAAAA",
                "state": body["state"],
                "description": body.get("description"),
                "target_url": body.get("target_url"),
                "context": body.get("context") or "default",
                "created_at": "2026-12-01T09:00:00Z",
                "updated_at": "2026-12-01T09:00:00Z",
                "creator": {"login": "octocat", "id": 1, "type": "User"},
            }
            posted.append(status)
        return 201, status, {}


def _error(status: int, message: str) -> dict[str, Any]:
    return {"message": message, "documentation_url": DOCS, "status": str(status)}


def _invalid(
    resource: str, field_name: str | None, code: str, message: str | None = None
) -> dict[str, Any]:
    entry: dict[str, Any] = {"resource": resource, "code": code}
    if field_name:
        entry["field"] = field_name
    if message:
        entry["message"] = message
    return {**_error(422, "Validation Failed"), "errors": [entry]}
