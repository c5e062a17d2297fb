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


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("https://127.0.0.1/o/r", "loopback"),
        ("https://127.1/o/r", "loopback"),
        ("https://2130706433/o/r", "loopback"),
        ("https://0x7f000001/o/r", "loopback"),
        ("https://[::1]/o/r", "loopback"),
        ("https://[::ffff:127.0.0.1]/o/r", "loopback"),
        ("https://169.254.169.254/o/r", "link-local"),
        ("https://[fe80::1]/o/r", "link-local"),
        ("https://10.0.0.5/o/r", "private-network"),
        ("https://172.16.3.4:8443/o/r", "private-network"),
        ("https://192.168.1.10/o/r", "private-network"),
        ("https://[fc00::1]/o/r", "private-network"),
        ("https://[fd12:3456::1]/o/r", "private-network"),
        ("git@192.168.1.10:o/r.git", "private-network"),
        ("ssh://git@10.0.0.5:2222/o/r.git", "private-network"),
        ("https://8.8.8.8/o/r", "an IP address"),
        ("https://localhost/o/r", "local network"),
        ("https://LocalHost./o/r", "local network"),
        ("https://git.localhost/o/r", "local network"),
        ("git@localhost:o/r.git", "local network"),
        ("https://nas.local/o/r", "local network"),
        ("https://metadata.google.internal/o/r", "local network"),
        ("https://git.example.123/o/r", "numeric"),
    ],
)
def test_private_and_ip_literal_hosts_are_refused_naming_why(url: str, problem: str) -> None:
    with pytest.raises(RepoUrlError, match=problem) as refused:
        normalize_repo_url(url)
    assert "ALLOW_PRIVATE_REPO_HOSTS" in str(refused.value)


@pytest.mark.parametrize(
    ("url", "canonical"),
    [
        ("https://[FD00::1]:8443/Team/Model.git", "https://[fd00::1]:8443/team/model"),
        ("https://[::1]/o/r", "https://[::1]/o/r"),
        ("https://10.0.0.5/o/r", "https://10.0.0.5/o/r"),
        ("git@localhost:o/r.git", "https://localhost/o/r"),
        ("ssh://git@[fd00::1]:2222/o/r.git", "ssh://git@[fd00::1]:2222/o/r"),
    ],
)
def test_allowed_private_hosts_keep_ipv6_brackets_and_ports(url: str, canonical: str) -> None:
    assert normalize_repo_url(url, allow_private_hosts=True) == canonical


@pytest.mark.parametrize(
    ("url", "canonical"),
    [
        ("ssh://git@ghe.example.com:2222/Org/Repo.git", "ssh://git@ghe.example.com:2222/org/repo"),
        ("ssh://git@ghe.example.com:2222/org/repo/", "ssh://git@ghe.example.com:2222/org/repo"),
        ("ssh://ghe.example.com:7999/org/repo", "ssh://ghe.example.com:7999/org/repo"),
        ("ssh://git@ghe.example.com:22/org/repo.git", "https://ghe.example.com/org/repo"),
    ],
)
def test_ssh_urls_on_other_ports_stay_ssh_urls_with_their_port(url: str, canonical: str) -> None:
    """Only the default ssh port maps to https on the same host; any other port is kept."""
    assert normalize_repo_url(url) == canonical


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("https://[::1/o/r", "not a valid URL"),
        ("ssh://git@ghe.example.com:ssh/o/r", "invalid port"),
        ("https://github.com:99999/o/r", "invalid port"),
    ],
)
def test_malformed_hosts_and_ports_say_why(url: str, message: str) -> None:
    with pytest.raises(RepoUrlError, match=message):
        normalize_repo_url(url, allow_private_hosts=True)


def test_payloads_from_private_hosts_still_match_their_repo() -> None:
    """Matching a delivery to a registered repo is no fetch: the host rule does not apply."""
    repository = repository_object("https://10.0.0.5/Octo-Org/Iris")
    assert "https://10.0.0.5/octo-org/iris" in payload_repo_urls(repository)
    assert payload_repo_urls({"clone_url": "https://[::1/o/r"}) == []
