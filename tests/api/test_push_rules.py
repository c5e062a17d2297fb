"""Which pushes run the notebook (the rules behind the webhook's 202 / 200 ignored)."""

from __future__ import annotations

import pytest

from backend.push_rules import MalformedPush, judge_push
from tests.support.github import commit_object, push_payload, random_sha

URL = "https://github.com/octo-org/iris"
NOTEBOOK = "notebooks/train.ipynb"


def judge(**kwargs):  # type: ignore[no-untyped-def]
    return judge_push(push_payload(URL, **kwargs), branch="main", watch_paths=[NOTEBOOK])


def test_run_is_at_the_pushed_commit_not_the_branch_name() -> None:
    sha = random_sha()
    verdict = judge(after=sha, modified=[NOTEBOOK])
    assert verdict.runs
    assert verdict.commit_sha == sha


def test_only_the_notebook_path_itself_counts() -> None:
    assert not judge(modified=["notebooks/train.ipynb.bak", "Notebooks/train.ipynb"]).runs
    many = [commit_object(URL, random_sha(), modified=["a.py"]) for _ in range(3)]
    many.append(commit_object(URL, random_sha(), modified=[NOTEBOOK]))
    assert judge(commits=many).runs  # any listed commit may touch it


def test_commits_without_file_lists_are_assumed_to_touch_it() -> None:
    commit = commit_object(URL, random_sha(), modified=["a.py"])
    del commit["modified"]  # e.g. payloads as GitHub Actions gets them
    assert judge(commits=[commit]).runs


def test_nineteen_listed_commits_are_trusted_twenty_may_be_cut() -> None:
    def commits(n: int) -> list[dict]:  # type: ignore[type-arg]
        return [commit_object(URL, random_sha(), modified=["a.py"]) for _ in range(n)]

    assert not judge(commits=commits(19)).runs
    assert judge(commits=commits(20)).runs


def test_a_new_branch_at_an_existing_commit_lists_none_and_runs() -> None:
    assert judge(created=True, commits=[]).runs


@pytest.mark.parametrize(
    ("changes", "field"),
    [({"ref": ""}, "'ref'"), ({"after": "HEAD"}, "'after'"), ({"after": None}, "'after'")],
)
def test_payloads_missing_what_github_always_sends_are_malformed(changes: dict, field: str) -> None:  # type: ignore[type-arg]
    payload = push_payload(URL, modified=[NOTEBOOK]) | changes
    with pytest.raises(MalformedPush, match=field):
        judge_push(payload, branch="main", watch_paths=[NOTEBOOK])
