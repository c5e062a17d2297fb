"""Which GitHub push events start a pipeline, following GitHub's documented push payload.

A push runs the repo's notebook when it updates the repo's branch and may have changed a watched
path (backend/watch_paths.py: the notebook, the files beside it...). "May have": GitHub lists at
most 20 commits, may list none (a force-push, a branch created at an existing commit), and some
senders omit the per-commit file lists. When the list cannot be trusted to be complete, the push
runs: an extra run costs minutes, a skipped one leaves a stale model. The verdict says why it
runs (`matched`): the changed path and the glob it matched, or why the list was not trusted.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from backend.watch_paths import first_match

# GitHub lists at most this many commits; a full list may have been cut.
MAX_LISTED_COMMITS: Final = 20
_SHA = re.compile(r"[0-9a-f]{40}|[0-9a-f]{64}")
_FILE_LISTS: Final = ("added", "modified", "removed")


class MalformedPush(ValueError):
    """The payload lacks what every GitHub push carries; the message names the field."""


@dataclass(frozen=True)
class PushVerdict:
    """Run the pipeline at `commit_sha` because of `matched`, or ignore the push for `reason`."""

    commit_sha: str
    ignore_reason: str | None
    matched: str | None = None

    @property
    def runs(self) -> bool:
        return self.ignore_reason is None


def judge_push(
    payload: Mapping[str, Any], *, branch: str, watch_paths: Sequence[str]
) -> PushVerdict:
    """Decide whether a push to `branch` runs the notebook (a path of `watch_paths` changed)."""
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
    matched = _may_touch(payload, watch_paths)
    if matched is not None:
        return PushVerdict(after, None, matched)
    return PushVerdict(after, f"no pushed commit touches a watched path ({', '.join(watch_paths)})")


@dataclass(frozen=True)
class PushPlan:
    """Which notebooks of a repo a push runs, `(notebook_path, matched)` in order, or why it
    runs none (`ignore_reason`)."""

    commit_sha: str
    runs: list[tuple[str, str]]
    ignore_reason: str | None


def plan_push(
    payload: Mapping[str, Any], *, branch: str, notebooks: Mapping[str, Sequence[str]]
) -> PushPlan:
    """Judge the push for each notebook (path → its watched globs): each runs when it may have
    changed one of its own watched paths."""
    verdicts = {
        path: judge_push(payload, branch=branch, watch_paths=globs)
        for path, globs in notebooks.items()
    }
    first = next(iter(verdicts.values()))
    runs = [(path, v.matched) for path, v in verdicts.items() if v.matched is not None]
    if runs:
        return PushPlan(first.commit_sha, runs, None)
    reasons = list(dict.fromkeys(v.ignore_reason for v in verdicts.values()))
    if len(reasons) == 1:  # one notebook, or a reason that is the push's (another branch)
        return PushPlan(first.commit_sha, [], reasons[0])
    watched = "; ".join(f"{path}: {', '.join(globs)}" for path, globs in notebooks.items())
    return PushPlan(
        first.commit_sha, [], f"no pushed commit touches a watched path of any notebook ({watched})"
    )


def _may_touch(payload: Mapping[str, Any], watch_paths: Sequence[str]) -> str | None:
    """Why the push changed, or might have changed, a watched path; None if it did not."""
    commits = payload.get("commits")
    if payload.get("forced") is True:
        # History was rewritten: the watched files may differ from what last ran.
        return "a forced push: any path may have changed"
    if not isinstance(commits, list) or not commits:
        return "the push lists no commits: any path may have changed"
    if len(commits) >= MAX_LISTED_COMMITS:
        return f"the push lists {len(commits)} commits (GitHub cuts the list at 20)"
    for commit in commits:
        if not isinstance(commit, Mapping):
            return "a listed commit is not an object: cannot tell which paths changed"
        for key in _FILE_LISTS:
            files = commit.get(key)
            if not isinstance(files, list):
                return "a commit lists no changed files: cannot tell which paths changed"
            found = first_match(watch_paths, (path for path in files if isinstance(path, str)))
            if found is not None:
                path, glob = found
                return path if path == glob else f"{path} (watched: {glob})"
    return None
