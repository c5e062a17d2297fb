"""The demo's webhook deliveries are built from real git history and signed as GitHub signs."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

from mlops_cli.github_delivery import ZERO_SHA, build_delivery, push_payload, signature_256


def test_signature_matches_githubs_documented_example() -> None:
    # The test values from GitHub's "Validating webhook deliveries" documentation.
    assert signature_256(b"Hello, World!", "It's a Secret to Everybody") == (
        "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
    )


def git(repo: Path, *args: str) -> str:
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "Ada",
        "GIT_AUTHOR_EMAIL": "ada@example.com",
        "GIT_COMMITTER_NAME": "Ada",
        "GIT_COMMITTER_EMAIL": "ada@example.com",
    }
    done = subprocess.run(["git", *args], cwd=repo, env=env, check=True, capture_output=True)
    return done.stdout.decode().strip()


def test_push_lists_each_commit_with_its_changed_files(tmp_path: Path) -> None:
    repo = tmp_path / "work"
    repo.mkdir()
    git(repo, "init", "--quiet", "--initial-branch=main")
    (repo / "train.ipynb").write_text("{}")
    (repo / "old.csv").write_text("a\n")
    git(repo, "add", "-A")
    git(repo, "commit", "--quiet", "-m", "first")
    first = git(repo, "rev-parse", "HEAD")
    (repo / "train.ipynb").write_text('{"cells": []}')
    (repo / "old.csv").unlink()
    (repo / "new.csv").write_text("b\n")
    git(repo, "add", "-A")
    git(repo, "commit", "--quiet", "-m", "second\n\nbody")
    second = git(repo, "rev-parse", "HEAD")

    url = (tmp_path / "remote.git").as_uri()
    payload = push_payload(
        repo, before=ZERO_SHA, after=second, branch="main", clone_url=url, full_name="o/r"
    )
    assert payload["ref"] == "refs/heads/main" and payload["created"] is True
    assert [c["id"] for c in payload["commits"]] == [first, second]
    assert payload["commits"][0]["added"] == ["old.csv", "train.ipynb"]
    latest = payload["head_commit"]
    assert (latest["added"], latest["modified"], latest["removed"]) == (
        ["new.csv"],
        ["train.ipynb"],
        ["old.csv"],
    )
    assert latest["message"] == "second\n\nbody"
    assert payload["repository"]["clone_url"] == url

    later = push_payload(
        repo, before=first, after=second, branch="main", clone_url=url, full_name="o/r"
    )
    assert [c["id"] for c in later["commits"]] == [second]

    delivery = build_delivery("push", later, "s3cret")
    assert json.loads(delivery.body) == later
    assert delivery.headers["X-GitHub-Event"] == "push"
    assert delivery.headers["X-Hub-Signature-256"] == signature_256(delivery.body, "s3cret")
    assert delivery.headers["User-Agent"].startswith("GitHub-Hookshot/")
    assert len(delivery.headers["X-GitHub-Delivery"]) == 36
