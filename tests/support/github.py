"""GitHub's side of a webhook, built the way GitHub builds it (github.com is not reachable here).

Payload shape after GitHub's documented push and ping events (and the examples shipped in
`@octokit/webhooks-examples`); headers and signature as GitHub sends them: `X-GitHub-Event`,
`X-GitHub-Delivery` (a GUID), `X-Hub-Signature-256: sha256=<hex HMAC-SHA256 of the raw body>`,
the legacy SHA-1 `X-Hub-Signature`, `User-Agent: GitHub-Hookshot/<id>`, JSON body.
Used by the tests and by the demo.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import time
import uuid
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from mlops_cli.github_delivery import signature_256

HOOK_ID = 417265832


def random_sha() -> str:
    """A well-formed commit sha that names no real commit."""
    return secrets.token_hex(20)


@dataclass(frozen=True)
class Delivery:
    """One webhook request: the exact bytes and headers GitHub would send."""

    event: str
    body: bytes
    headers: dict[str, str]
    delivery_id: str = field(default="")


def delivery(
    payload: dict[str, Any],
    secret: str | None,
    *,
    event: str = "push",
    delivery_id: str | None = None,
) -> Delivery:
    """Serialise and sign `payload` like GitHub; `secret=None` sends it unsigned."""
    body = json.dumps(payload, separators=(",", ":")).encode()
    guid = delivery_id or str(uuid.uuid4())
    repo_id = payload.get("repository", {}).get("id", 0)
    headers = {
        "Accept": "*/*",
        "Content-Type": "application/json",
        "User-Agent": "GitHub-Hookshot/8d33975",
        "X-GitHub-Delivery": guid,
        "X-GitHub-Event": event,
        "X-GitHub-Hook-ID": str(HOOK_ID),
        "X-GitHub-Hook-Installation-Target-ID": str(repo_id),
        "X-GitHub-Hook-Installation-Target-Type": "repository",
    }
    if secret is not None:
        headers["X-Hub-Signature"] = (
            "sha1=" + hmac.new(secret.encode(), body, hashlib.sha1).hexdigest()
        )
        headers["X-Hub-Signature-256"] = signature_256(body, secret)
    return Delivery(event=event, body=body, headers=headers, delivery_id=guid)


def _names(repo_url: str) -> tuple[str, str, str]:
    """(host, owner, name) of a GitHub URL; a local repo gets owner `local`."""
    parts = urlsplit(repo_url)
    if parts.scheme == "file" or repo_url.startswith("/"):
        name = parts.path.rstrip("/").rsplit("/", 1)[-1].removesuffix(".git") or "repo"
        return "", "local", name
    owner, name = parts.path.strip("/").removesuffix(".git").split("/")[:2]
    return parts.hostname or "github.com", owner, name


def repository_object(repo_url: str, *, branch: str = "main") -> dict[str, Any]:
    """The `repository` object of a payload, with every URL spelling GitHub includes."""
    host, owner, name = _names(repo_url)
    if host:
        html = f"https://{host}/{owner}/{name}"
        clone, ssh, git = (
            f"{html}.git",
            f"git@{host}:{owner}/{name}.git",
            f"git://{host}/{owner}/{name}.git",
        )
        api = f"https://api.{host}/repos/{owner}/{name}"
    else:  # a local repository standing in for GitHub: every URL is the local one
        html = clone = ssh = git = repo_url
        api = f"https://api.github.com/repos/{owner}/{name}"
    user = {
        "name": owner,
        "email": None,
        "login": owner,
        "id": 21031067,
        "node_id": "MDQ6VXNlcjIxMDMxMDY3",
        "type": "User",
        "site_admin": False,
        "html_url": f"https://github.com/{owner}",
    }
    now = int(time.time())
    return {
        "id": 186853002,
        "node_id": "MDEwOlJlcG9zaXRvcnkxODY4NTMwMDI=",
        "name": name,
        "full_name": f"{owner}/{name}",
        "private": False,
        "owner": user,
        "html_url": html,
        "description": None,
        "fork": False,
        "url": api,
        "created_at": now - 86400,
        "updated_at": "2026-11-22T05:00:00Z",
        "pushed_at": now,
        "git_url": git,
        "ssh_url": ssh,
        "clone_url": clone,
        "svn_url": html,
        "homepage": None,
        "size": 0,
        "default_branch": branch,
        "master_branch": branch,
        "visibility": "public",
        "archived": False,
        "disabled": False,
    }


def commit_object(
    repo_url: str,
    sha: str,
    *,
    added: list[str] | None = None,
    modified: list[str] | None = None,
    removed: list[str] | None = None,
    message: str = "Update notebook",
) -> dict[str, Any]:
    """One entry of a push payload's `commits`."""
    person = {"name": "Octo Cat", "email": "octocat@example.com", "username": "octocat"}
    return {
        "id": sha,
        "tree_id": random_sha(),
        "distinct": True,
        "message": message,
        "timestamp": "2026-11-22T05:00:00+00:00",
        "url": f"{repo_url.removesuffix('.git')}/commit/{sha}",
        "author": person,
        "committer": person,
        "added": list(added or []),
        "removed": list(removed or []),
        "modified": list(modified or []),
    }


def push_payload(
    repo_url: str,
    *,
    branch: str = "main",
    after: str | None = None,
    before: str | None = None,
    modified: list[str] | None = None,
    added: list[str] | None = None,
    removed: list[str] | None = None,
    commits: list[dict[str, Any]] | None = None,
    ref: str | None = None,
    deleted: bool = False,
    forced: bool = False,
    created: bool = False,
) -> dict[str, Any]:
    """A push event payload: by default one commit modifying `modified` on `branch`.

    `commits` replaces the generated commit list (pass [] for a push that lists none).
    """
    after = "0" * 40 if deleted else (after or random_sha())
    before = "0" * 40 if created else (before or random_sha())
    if commits is None:
        commits = (
            []
            if deleted
            else [commit_object(repo_url, after, added=added, modified=modified, removed=removed)]
        )
    repository = repository_object(repo_url, branch=branch)
    pusher = {"name": "octocat", "email": "octocat@example.com"}
    return {
        "ref": ref or f"refs/heads/{branch}",
        "before": before,
        "after": after,
        "repository": repository,
        "pusher": pusher,
        "sender": repository["owner"],
        "created": created,
        "deleted": deleted,
        "forced": forced,
        "base_ref": None,
        "compare": f"{repository['html_url']}/compare/{before[:12]}...{after[:12]}",
        "commits": commits,
        "head_commit": commits[-1] if commits else None,
    }


def ping_payload(repo_url: str) -> dict[str, Any]:
    """The ping event GitHub sends when a webhook is created."""
    return {
        "zen": "Keep it logically awesome.",
        "hook_id": HOOK_ID,
        "hook": {
            "type": "Repository",
            "id": HOOK_ID,
            "name": "web",
            "active": True,
            "events": ["push"],
            "config": {"content_type": "json", "insecure_ssl": "0", "url": "https://example.com"},
        },
        "repository": repository_object(repo_url),
        "sender": repository_object(repo_url)["owner"],
    }
