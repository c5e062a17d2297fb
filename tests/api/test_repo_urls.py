"""One canonical URL per repository, and matching a push payload's `repository` to it."""

from __future__ import annotations

from pathlib import Path

import pytest

from mlops_core.repo_urls import (
    RepoUrlError,
    normalize_repo_url,
    payload_full_name,
    payload_repo_urls,
)
from tests.support.github import repository_object


@pytest.mark.parametrize(
    "spelling",
    [
        "https://github.com/octo-org/iris",
        "https://github.com/Octo-Org/Iris",
        "https://github.com/octo-org/iris.git",
        "https://github.com/octo-org/iris/",
        "https://github.com:443/octo-org/iris",
        "  https://github.com/octo-org/iris  ",
        "git@github.com:octo-org/iris.git",
        "git@github.com:Octo-Org/Iris",
        "ssh://git@github.com/octo-org/iris.git",
        "ssh://git@github.com:22/octo-org/iris",
    ],
)
def test_spellings_of_one_repo_share_a_canonical_url(spelling: str) -> None:
    assert normalize_repo_url(spelling) == "https://github.com/octo-org/iris"


def test_enterprise_hosts_keep_host_and_port() -> None:
    assert normalize_repo_url("https://GHE.corp:8443/Team/Model.git") == (
        "https://ghe.corp:8443/team/model"
    )
    assert normalize_repo_url("git@ghe.corp:team/model.git") == "https://ghe.corp/team/model"


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("", "empty"),
        ("http://github.com/o/r", "https://"),
        ("git://github.com/o/r.git", "https://"),
        ("https://token@github.com/o/r", "credentials"),
        ("https://u:p@github.com/o/r", "credentials"),
        ("https://github.com/o/r?tab=readme", "query"),
        ("https://github.com/o", "owner and a repository"),
        ("https://github.com/o/r/tree/main", "owner and a repository"),
        ("https://github.com/o/..", "owner and a repository"),
        ("github.com/o/r", "not a repository URL"),
        ("ftp://github.com/o/r", "not a repository URL"),
        ("/srv/git/repo", "ALLOW_LOCAL_REPOS"),
        ("file:///srv/git/repo", "ALLOW_LOCAL_REPOS"),
    ],
)
def test_unacceptable_urls_say_why(url: str, message: str) -> None:
    with pytest.raises(RepoUrlError, match=message.replace("?", r"\?")):
        normalize_repo_url(url)


def test_local_repos_become_absolute_file_urls(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.chdir(tmp_path)
    expected = (tmp_path / "Repo").as_uri()
    for spelling in (str(tmp_path / "Repo"), f"{tmp_path}/Repo/", "./Repo", expected):
        assert normalize_repo_url(spelling, allow_local=True) == expected  # case kept


def test_payload_repository_yields_every_spelling_normalised() -> None:
    repository = repository_object("https://github.com/Octo-Org/Iris")
    assert payload_repo_urls(repository) == ["https://github.com/octo-org/iris"]
    assert payload_full_name(repository) == "octo-org/iris"


def test_odd_payload_fields_do_not_match_rather_than_fail() -> None:
    repository = {"clone_url": 42, "html_url": "not a url", "ssh_url": None, "full_name": "x"}
    assert payload_repo_urls(repository) == []
    assert payload_full_name(repository) is None
