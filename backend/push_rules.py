"""Which GitHub push events start a pipeline, following GitHub's documented push payload.

A push runs the repo's notebook when it updates the repo's branch and may have changed the
notebook. "May have": GitHub lists at most 20 commits, may list none (a force-push, a branch
created at an existing commit), and some senders omit the per-commit file lists. When the list
cannot be trusted to be complete, the push runs: an extra run costs minutes, a skipped one
leaves a stale model.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

# GitHub lists at most this many commits; a full list may have been cut.
MAX_LISTED_COMMITS: Final = 20
_SHA = re.compile(r"[0-9a-f]{40}|[0-9a-f]{64}")
_FILE_LISTS: Final = ("added", "modified", "removed")


class MalformedPush(ValueError):
    """The payload lacks what every GitHub push carries; the message names the field."""


@dataclass(frozen=True)
class PushVerdict:
    """Run the pipeline at `commit_sha`, or ignore the push for `reason`."""

    commit_sha: str
    ignore_reason: str | None

    @property
    def runs(self) -> bool:
        return self.ignore_reason is None


def judge_push(payload: Mapping[str, Any], *, branch: str, notebook_path: str) -> PushVerdict:
    """Decide whether a push runs the notebook at `notebook_path` on `branch`."""
    ref = payload.get("ref")
    if not isinstance(ref, str) or not ref:
        raise MalformedPush("push payload has no 'ref'")
    after = payload.get("after")
    if not isinstance(after, str) or not _SHA.fullmatch(after):
        raise MalformedPush("push payload has no valid 'after' commit sha")

    if not ref.startswith("refs/heads/"):
        return PushVerdict(after, f"{ref} is not a branch; only pushes to '{branch}' run")
    pushed_branch = ref.removeprefix("refs/heads/")
    if pushed_branch != branch:
        return PushVerdict(
            after, f"push to branch '{pushed_branch}'; this repo runs on branch '{branch}'"
        )
    if payload.get("deleted") is True or set(after) == {"0"}:
        return PushVerdict(after, f"branch '{branch}' was deleted")
    if _may_touch(payload, notebook_path):
        return PushVerdict(after, None)
    return PushVerdict(after, f"no pushed commit touches {notebook_path}")


def _may_touch(payload: Mapping[str, Any], notebook_path: str) -> bool:
    """Whether the push changed, or might have changed, the notebook."""
    commits = payload.get("commits")
    if payload.get("forced") is True:
        return True  # history was rewritten: the notebook may differ from what last ran
    if not isinstance(commits, list) or not commits or len(commits) >= MAX_LISTED_COMMITS:
        return True
    for commit in commits:
        if not isinstance(commit, Mapping):
            return True
        for key in _FILE_LISTS:
            files = commit.get(key)
            if not isinstance(files, list):
                return True  # file lists missing: cannot tell
            if notebook_path in files:
                return True
    return False
