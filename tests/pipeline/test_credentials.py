"""Credentials reach only where they belong: GITHUB_TOKEN the hosts of GITHUB_TOKEN_HOSTS, a
repo's own token its own host; no `insteadOf` rewrite and no redirect carries either elsewhere.

The git tests run the fetch phase in this process against real HTTPS git servers (self-signed
certificate trusted through GIT_SSL_CAINFO) whose access logs show every request's headers.
One server process answers as two hosts: `localhost:<port>` and `127.0.0.1:<port>`.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from pydantic import ValidationError

from mlops_core.settings import Settings
from tests.pipeline.conftest import GitRepo, build_notebook
from tests.pipeline.git_http_server import GitHttpServer, TlsCertificate, basic_authorization
from tests.support.phases import log_lines
from worker.phases import fetch
from worker.phases.context import PhaseContext, PhaseFailed

GITHUB_TOKEN = "ghp_operator_token_7c41aa"
REPO_TOKEN = "ghs_repo_only_token_93b1e0"
NOTEBOOK = "train.ipynb"


# --- where a token may go (pure) -----------------------------------------------------------


def test_a_repos_own_token_goes_to_its_own_host_only_and_replaces_github_token() -> None:
    credential = fetch.choose_credential(
        "https://ghe.example.com:8443/o/r",
        repo_token=REPO_TOKEN,
        github_token=GITHUB_TOKEN,
        github_token_hosts=["github.com", "ghe.example.com:8443"],
    )
    assert credential is not None
    assert credential.prefixes == ("https://ghe.example.com:8443/",)
    assert credential.header == fetch.auth_header(REPO_TOKEN)
    assert credential.header not in repr(credential)


def test_github_token_goes_to_the_listed_hosts_whatever_host_the_repo_names() -> None:
    for repo_url in ("https://github.com/o/r", "https://evil.example.com/o/r", "file:///srv/r"):
        credential = fetch.choose_credential(
            repo_url,
            repo_token=None,
            github_token="g",
            github_token_hosts=["github.com", "localhost:8443"],
        )
        assert credential is not None
        assert credential.prefixes == ("https://github.com/", "https://localhost:8443/")
        assert credential.source == fetch.OPERATOR_CREDENTIAL


def test_no_token_is_sent_over_plain_http_or_when_none_is_configured() -> None:
    assert (
        fetch.choose_credential(
            "http://git.example.com/o/r", repo_token="t", github_token="g", github_token_hosts=[]
        )
        is None
    )
    assert (
        fetch.choose_credential(
            "https://github.com/o/r", repo_token=None, github_token="g", github_token_hosts=[]
        )
        is None
    )
    assert (
        fetch.choose_credential(
            "https://github.com/o/r",
            repo_token=None,
            github_token=None,
            github_token_hosts=["github.com"],
        )
        is None
    )


def test_github_token_hosts_are_host_or_host_and_port() -> None:
    assert Settings(_env_file=None).github_token_hosts == ["github.com"]  # type: ignore[call-arg]
    hosts = Settings(
        _env_file=None,  # type: ignore[call-arg]
        github_token_hosts=[" GitHub.com:443 ", "ghe.example.com:8443", "10.0.0.7"],
    ).github_token_hosts
    assert hosts == ["github.com", "ghe.example.com:8443", "10.0.0.7"]
    for bad in ("https://github.com", "github.com/org", "*.github.com", "user@github.com", ""):
        with pytest.raises(ValidationError, match="GITHUB_TOKEN_HOSTS"):
            Settings(_env_file=None, github_token_hosts=[bad])  # type: ignore[call-arg]


# --- real fetches over HTTPS ----------------------------------------------------------------


@dataclass
class Served:
    """A bare repository served by the test git servers, and the commit to fetch."""

    root: Path
    sha: str


@pytest.fixture
def served(make_repo: Callable[[], GitRepo], tmp_path: Path) -> Served:
    repo = make_repo()
    sha = repo.commit({NOTEBOOK: build_notebook([(("mlops:config",), 'MODEL_NAME = "m"')])})
    root = tmp_path / "served"
    root.mkdir()
    subprocess.run(
        ["git", "clone", "--quiet", "--bare", str(repo.path), str(root / "r.git")], check=True
    )
    return Served(root, sha)


@pytest.fixture
def git_setup(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, tls_certificate: TlsCertificate
) -> Callable[..., None]:
    """The worker's own environment for git: trusts the test CA; `insteadOf` rules on request."""
    home = tmp_path / "git-home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))  # no user-level git config of this machine applies
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    monkeypatch.setenv("GIT_SSL_CAINFO", str(tls_certificate.cert_path))
    monkeypatch.setenv("NO_PROXY", "*")
    monkeypatch.delenv("GIT_CONFIG_COUNT", raising=False)

    def instead_of(real_base: str, named_base: str) -> None:
        """The operator's `git config url.<real_base>.insteadOf <named_base>` (via the env)."""
        monkeypatch.setenv("GIT_CONFIG_COUNT", "1")
        monkeypatch.setenv("GIT_CONFIG_KEY_0", f"url.{real_base}.insteadOf")
        monkeypatch.setenv("GIT_CONFIG_VALUE_0", named_base)

    return instead_of


@pytest.fixture
def public_server(served: Served, tls_certificate: TlsCertificate) -> Iterator[GitHttpServer]:
    """Serves anyone (a public repository), so that only its access log tells what was sent."""
    with GitHttpServer(served.root, tls=tls_certificate) as server:
        yield server


def run_fetch(
    make_phase_context: Callable[..., PhaseContext],
    served: Served,
    repo_url: str,
    *,
    hosts: list[str],
    repo_token: str | None = None,
) -> tuple[PhaseContext, list[str]]:
    """Run the fetch phase with GITHUB_TOKEN set; return the context and its log lines."""
    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        github_token=GITHUB_TOKEN,
        github_token_hosts=hosts,
    )
    ctx = make_phase_context(
        settings,
        phase="fetch",
        repo_url=repo_url,
        branch="main",
        notebook_path=NOTEBOOK,
        commit_sha=served.sha,
        repo_token=repo_token,
    )
    try:
        fetch.run(ctx)
    finally:
        lines = log_lines(ctx)
        for text in lines:
            assert GITHUB_TOKEN not in text and REPO_TOKEN not in text
    return ctx, lines


def authorizations(server: GitHttpServer) -> list[str | None]:
    assert server.access_log, "the server saw no request"
    return server.seen_authorization


def test_a_repo_on_an_unlisted_host_is_fetched_with_no_authorization_at_all(
    make_phase_context: Callable[..., PhaseContext],
    served: Served,
    public_server: GitHttpServer,
    git_setup: Callable[..., None],
) -> None:
    url = f"{public_server.url_for('127.0.0.1')}/r.git"
    ctx, log = run_fetch(
        make_phase_context, served, url, hosts=["github.com", public_server.netloc("localhost")]
    )
    assert ctx.notebook_file is not None and ctx.notebook_file.is_file()
    assert authorizations(public_server) == [None] * len(public_server.access_log)
    assert f"GITHUB_TOKEN is not sent to {public_server.netloc('127.0.0.1')}" in " ".join(log)


def test_a_repo_on_a_listed_host_gets_github_token(
    make_phase_context: Callable[..., PhaseContext],
    served: Served,
    public_server: GitHttpServer,
    git_setup: Callable[..., None],
) -> None:
    url = f"{public_server.url_for('localhost')}/r.git"
    run_fetch(make_phase_context, served, url, hosts=[public_server.netloc("localhost")])
    expected = basic_authorization(GITHUB_TOKEN)
    assert authorizations(public_server) == [expected] * len(public_server.access_log)


def test_a_private_repo_on_a_listed_host_opens_with_github_token_and_not_on_another(
    make_phase_context: Callable[..., PhaseContext],
    served: Served,
    tls_certificate: TlsCertificate,
    git_setup: Callable[..., None],
) -> None:
    with GitHttpServer(served.root, GITHUB_TOKEN, tls=tls_certificate) as private:
        listed = f"{private.url_for('localhost')}/r.git"
        run_fetch(make_phase_context, served, listed, hosts=[private.netloc("localhost")])
        unlisted = f"{private.url_for('127.0.0.1')}/r.git"
        with pytest.raises(PhaseFailed, match="not found or not accessible"):
            run_fetch(make_phase_context, served, unlisted, hosts=[private.netloc("localhost")])
    by_host: dict[str, set[str | None]] = {}
    for entry in private.access_log:
        by_host.setdefault(entry.host, set()).add(entry.authorization)
    assert by_host == {
        private.netloc("localhost"): {basic_authorization(GITHUB_TOKEN)},
        private.netloc("127.0.0.1"): {None},
    }


def test_an_insteadof_rewrite_does_not_carry_github_token_to_an_unlisted_host(
    make_phase_context: Callable[..., PhaseContext],
    served: Served,
    public_server: GitHttpServer,
    git_setup: Callable[..., None],
) -> None:
    # The repo names github.com; the operator's git config sends github.com to the local server.
    git_setup(f"{public_server.url_for('localhost')}/", "https://github.com/")
    run_fetch(make_phase_context, served, "https://github.com/r.git", hosts=["github.com"])
    assert authorizations(public_server) == [None] * len(public_server.access_log)

    public_server.access_log.clear()
    both = ["github.com", public_server.netloc("localhost")]
    run_fetch(make_phase_context, served, "https://github.com/r.git", hosts=both)
    expected = basic_authorization(GITHUB_TOKEN)
    assert authorizations(public_server) == [expected] * len(public_server.access_log)


def test_a_repos_own_token_for_host_a_never_reaches_host_b(
    make_phase_context: Callable[..., PhaseContext],
    served: Served,
    public_server: GitHttpServer,
    git_setup: Callable[..., None],
) -> None:
    host_a = public_server.url_for("localhost")
    # Fetched from host A itself: the repo's token goes there (and GITHUB_TOKEN does not).
    run_fetch(
        make_phase_context,
        served,
        f"{host_a}/r.git",
        hosts=[public_server.netloc("localhost")],
        repo_token=REPO_TOKEN,
    )
    assert set(authorizations(public_server)) == {basic_authorization(REPO_TOKEN)}

    # Host A's URL rewritten to host B: B sees no credential, even though B is listed for
    # GITHUB_TOKEN (the repo's token replaces GITHUB_TOKEN; neither goes to B).
    public_server.access_log.clear()
    git_setup(f"{public_server.url_for('127.0.0.1')}/", f"{host_a}/")
    run_fetch(
        make_phase_context,
        served,
        f"{host_a}/r.git",
        hosts=[public_server.netloc("127.0.0.1")],
        repo_token=REPO_TOKEN,
    )
    assert {entry.host for entry in public_server.access_log} == {public_server.netloc("127.0.0.1")}
    assert set(authorizations(public_server)) == {None}


def test_a_redirect_from_host_a_to_host_b_does_not_carry_the_repos_token(
    make_phase_context: Callable[..., PhaseContext],
    served: Served,
    public_server: GitHttpServer,
    tls_certificate: TlsCertificate,
    git_setup: Callable[..., None],
) -> None:
    # git's default (http.followRedirects=initial) follows the first request's redirect and then
    # sends its configured headers to the new host; a fetch carrying a token follows none.
    target = public_server.url_for("127.0.0.1")
    with GitHttpServer(served.root, tls=tls_certificate, redirect_to=target) as moved:
        url = f"{moved.url_for('localhost')}/r.git"
        with pytest.raises(PhaseFailed, match="redirects elsewhere") as failed:
            run_fetch(make_phase_context, served, url, hosts=[], repo_token=REPO_TOKEN)
    assert set(authorizations(moved)) == {basic_authorization(REPO_TOKEN)}
    assert public_server.access_log == []
    assert REPO_TOKEN not in str(failed.value)


def test_git_gets_only_per_url_headers_never_a_global_one(
    make_phase_context: Callable[..., PhaseContext], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("GIT_CONFIG_COUNT", raising=False)
    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        github_token=GITHUB_TOKEN,
        github_token_hosts=["github.com", "ghe.example.com:8443"],
    )
    ctx = make_phase_context(settings, phase="fetch", repo_url="https://gitlab.example.com/o/r")
    env = fetch.git_env(ctx)
    config = {
        env[f"GIT_CONFIG_KEY_{i}"]: env[f"GIT_CONFIG_VALUE_{i}"]
        for i in range(int(env["GIT_CONFIG_COUNT"]))
    }
    header = fetch.auth_header(GITHUB_TOKEN)
    assert config == {
        "http.https://github.com/.extraHeader": header,
        "http.https://github.com/.followRedirects": "false",
        "http.https://ghe.example.com:8443/.extraHeader": header,
        "http.https://ghe.example.com:8443/.followRedirects": "false",
    }
    assert GITHUB_TOKEN not in env.values() and "GITHUB_TOKEN" not in env
