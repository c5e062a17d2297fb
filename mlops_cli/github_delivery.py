"""A GitHub push webhook built from a real git repository, signed and framed as GitHub sends it.

For a local repository standing in for GitHub (the demo, a laptop with no public URL):
the payload lists the pushed commits with the files each added, modified and removed, read
from git itself; the headers are GitHub's (`X-GitHub-Event`, a GUID in `X-GitHub-Delivery`,
`X-Hub-Signature-256` = HMAC-SHA256 of the exact body bytes, a `GitHub-Hookshot` user agent).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import subprocess
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ZERO_SHA = "0" * 40
# GitHub lists at most this many commits in a push payload.
MAX_COMMITS = 20


@dataclass(frozen=True)
class WebhookDelivery:
    """The exact bytes and headers of one webhook request."""

    event: str
    delivery_id: str
    body: bytes
    headers: dict[str, str]


def signature_256(body: bytes, secret: str) -> str:
    """The `X-Hub-Signature-256` header value GitHub computes for `body`."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def build_delivery(event: str, payload: dict[str, Any], secret: str) -> WebhookDelivery:
    """Serialise and sign a payload the way GitHub's hook service does."""
    body = json.dumps(payload, separators=(",", ":")).encode()
    delivery_id = str(uuid.uuid4())
    headers = {
        "Accept": "*/*",
        "Content-Type": "application/json",
        "User-Agent": "GitHub-Hookshot/044aadd",
        "X-GitHub-Event": event,
        "X-GitHub-Delivery": delivery_id,
        "X-GitHub-Hook-Installation-Target-Type": "repository",
        "X-Hub-Signature-256": signature_256(body, secret),
    }
    return WebhookDelivery(event, delivery_id, body, headers)


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(repo), *args], check=True, capture_output=True, text=True
    ).stdout


def _commit(repo: Path, sha: str, html_url: str) -> dict[str, Any]:
    fields = _git(repo, "show", "-s", "--format=%T%x00%an%x00%ae%x00%cn%x00%ce%x00%cI%x00%B", sha)
    tree, author, author_email, committer, committer_email, when, message = fields.split("\0", 6)
    changes: dict[str, list[str]] = {"added": [], "modified": [], "removed": []}
    kinds = {"A": "added", "M": "modified", "D": "removed", "T": "modified"}
    status = _git(repo, "diff-tree", "--root", "--no-commit-id", "-r", "--name-status", sha)
    for line in status.splitlines():
        kind, _, path = line.partition("\t")
        if kind[:1] in kinds:
            changes[kinds[kind[:1]]].append(path)
    return {
        "id": sha,
        "tree_id": tree,
        "distinct": True,
        "message": message.strip(),
        "timestamp": when,
        "url": f"{html_url}/commit/{sha}",
        "author": {"name": author, "email": author_email},
        "committer": {"name": committer, "email": committer_email},
        **changes,
    }


def push_payload(
    repo: Path,
    *,
    before: str,
    after: str,
    branch: str,
    clone_url: str,
    full_name: str,
) -> dict[str, Any]:
    """The push event for `before..after` on `branch`, read from the git repository `repo`.

    `clone_url` is the URL the platform registered (a `file://` URL for a local stand-in);
    `before` is ZERO_SHA when the branch is new.
    """
    span = after if before == ZERO_SHA else f"{before}..{after}"
    shas = _git(repo, "rev-list", "--reverse", span).split()
    html_url = clone_url.removesuffix(".git")
    commits = [_commit(repo, sha, html_url) for sha in shas[-MAX_COMMITS:]]
    owner, _, name = full_name.partition("/")
    pusher = commits[-1]["committer"] if commits else {"name": owner, "email": None}
    return {
        "ref": f"refs/heads/{branch}",
        "before": before,
        "after": after,
        "created": before == ZERO_SHA,
        "deleted": False,
        "forced": False,
        "base_ref": None,
        "compare": f"{html_url}/compare/{before[:12]}...{after[:12]}",
        "commits": commits,
        "head_commit": commits[-1] if commits else None,
        "repository": {
            "name": name,
            "full_name": full_name,
            "private": False,
            "owner": {"name": owner, "login": owner},
            "html_url": html_url,
            "clone_url": clone_url,
            "git_url": clone_url,
            "ssh_url": clone_url,
            "url": html_url,
            "default_branch": branch,
            "master_branch": branch,
        },
        "pusher": pusher,
        "sender": {"login": owner, "type": "User"},
    }
