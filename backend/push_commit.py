"""The pushed commit's message, author and web link, from a push payload.

GitHub's push event carries the head commit (`head_commit`) and up to 20 `commits`, each with
its message, author and `url`; a pipeline keeps those of the commit it runs, so the dashboard
can say what changed and who changed it without asking GitHub. The payload's signature was
checked before this reads it, but its fields are still only text (mlops_core/commit_info.py
bounds them and keeps only http(s) links).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from mlops_core.commit_info import CommitInfo


def _author(commit: Mapping[str, Any]) -> object:
    author = commit.get("author")
    if not isinstance(author, Mapping):
        return None
    name = author.get("name")
    return name if isinstance(name, str) and name.strip() else author.get("username")


def pushed_commit(payload: Mapping[str, Any], sha: str) -> CommitInfo:
    """The message, author and link of commit `sha` as the push payload describes it."""
    candidates = [payload.get("head_commit")]
    commits = payload.get("commits")
    if isinstance(commits, list):
        candidates.extend(reversed(commits))
    for commit in candidates:
        if isinstance(commit, Mapping) and commit.get("id") == sha:
            return CommitInfo.bounded(commit.get("message"), _author(commit), commit.get("url"))
    return CommitInfo()
