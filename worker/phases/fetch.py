"""fetch: exactly the pushed commit, shallow, into a fresh folder, with the git command line.

The git CLI (not a library) so that the operator's git configuration applies: proxies,
`url.<base>.insteadOf`, credential helpers, CA bundles. A token travels as an HTTP header set
through git's environment-based configuration (GIT_CONFIG_COUNT/KEY_n/VALUE_n): it never
appears in the URL, in a process argument (visible to every user in `ps`) or in a log line.

Where a token may go (`choose_credential`): a repo's own token to the host of the repo's URL,
GITHUB_TOKEN to the hosts of GITHUB_TOKEN_HOSTS, both over https only. The header is set with
git's per-URL form `http.https://host[:port]/.extraHeader`, never the global
`http.extraHeader` that git sends to every host it talks to. Git matches per-URL config
against the URL it actually requests (after `url.<base>.insteadOf` rewriting), so a rewrite to
another host leaves the header behind; and `followRedirects` is off for those prefixes,
because after a redirect git sends its configured headers to the new host (a moved repository
then fails with a 301 instead of leaking the token: register its new URL).
"""

from __future__ import annotations

import base64
import logging
import re
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from sqlalchemy import update
from sqlalchemy.exc import SQLAlchemyError

from mlops_core.commit_info import CommitInfo, commit_web_url
from mlops_core.kernel_env import git_environment
from mlops_core.schema import Pipeline
from worker.child_processes import run_command
from worker.phases.context import PhaseContext, PhaseFailed

logger = logging.getLogger(__name__)

ALLOWED_SCHEMES = ("https", "http", "file")
# The only scheme a token is ever sent over.
CREDENTIAL_SCHEME = "https"
REPO_CREDENTIAL = "the repository's token"
OPERATOR_CREDENTIAL = "GITHUB_TOKEN"
FULL_SHA = re.compile(r"^[0-9a-f]{40}([0-9a-f]{24})?$")
# How git reports an HTTP redirect it did not follow.
REDIRECTED = re.compile(r"returned error: 30[1278]")


@dataclass(frozen=True)
class Credential:
    """A token as git's Authorization header, and the only URL prefixes git may send it to."""

    source: str  # REPO_CREDENTIAL or OPERATOR_CREDENTIAL, for the log
    prefixes: tuple[str, ...]  # https://host[:port]/
    header: str = field(repr=False)


def run(ctx: PhaseContext) -> None:
    """Check out the pipeline's commit into `ctx.work_dir / "repo"`; resolve it first if unset."""
    scheme = urlsplit(ctx.repo_url).scheme
    if scheme not in ALLOWED_SCHEMES or (scheme == "file" and not ctx.settings.allow_local_repos):
        raise PhaseFailed(
            f"repository URL {ctx.repo_url} is not allowed (https, or file:// "
            "with ALLOW_LOCAL_REPOS=true)"
        )
    _log_credential(ctx)
    env = git_env(ctx)
    if ctx.commit_sha is None:
        ctx.commit_sha = resolve_branch_head(ctx, env)
        ctx.update_pipeline(commit_sha=ctx.commit_sha)
        ctx.log(f"branch {ctx.branch} is at {ctx.commit_sha}")
    checkout = ctx.work_dir / "repo"
    if checkout.exists():
        shutil.rmtree(checkout)
    checkout.mkdir(parents=True)
    ctx.log(f"fetching {ctx.repo_url} at {ctx.commit_sha}")
    _git(ctx, env, ["init", "--quiet", str(checkout)], "git init")
    fetched = run_command(
        ctx,
        [
            "git",
            "-C",
            str(checkout),
            "fetch",
            "--depth=1",
            "--no-tags",
            "--quiet",
            "--",
            ctx.repo_url,
            ctx.commit_sha,
        ],
        env=env,
        what="git fetch",
    )
    if fetched.returncode != 0:
        raise PhaseFailed(_fetch_error(ctx, env, fetched.stderr))
    _git(
        ctx, env, ["-C", str(checkout), "checkout", "--quiet", "--detach", "FETCH_HEAD"], "checkout"
    )
    head = _git(ctx, env, ["-C", str(checkout), "rev-parse", "HEAD"], "git rev-parse").strip()
    if FULL_SHA.match(ctx.commit_sha) and head != ctx.commit_sha:
        raise PhaseFailed(f"fetched commit {head} instead of {ctx.commit_sha}")
    ctx.checkout_dir = checkout
    ctx.notebook_file = _notebook_in(checkout, ctx.notebook_path, head)
    ctx.log(f"checked out {head[:12]}; notebook {ctx.notebook_path}")
    _describe_commit(ctx, env, checkout, head)


def _describe_commit(ctx: PhaseContext, env: Mapping[str, str], checkout: Path, head: str) -> None:
    """Give a run no push described (manual, scheduled) its commit's message, author and link,
    read from git; a push's own description is kept (the UPDATE skips a row that has one)."""
    shown = run_command(
        ctx,
        ["git", "-C", str(checkout), "show", "--no-patch", "--format=%an%x00%B", head],
        env=env,
        what="git show",
    )
    if shown.returncode != 0:  # the description is a courtesy: the run goes on without it
        return
    author, _, message = shown.stdout.partition("\0")
    commit = CommitInfo.bounded(message, author, commit_web_url(ctx.repo_url, head))
    try:
        with ctx.session() as session:
            session.execute(
                update(Pipeline)
                .where(Pipeline.id == ctx.pipeline_id, Pipeline.commit_message.is_(None))
                .values(
                    commit_message=commit.message,
                    commit_author=commit.author,
                    commit_url=commit.url,
                )
            )
    except SQLAlchemyError as exc:
        logger.warning("pipeline %s: commit description not stored: %s", ctx.pipeline_id, exc)


def git_env(ctx: PhaseContext, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """git's environment, with the pipeline's credential (if any) scoped to where it may go."""
    env = git_environment(ctx.settings, base)
    credential = pipeline_credential(ctx)
    if credential is not None:
        for prefix in credential.prefixes:
            add_config(env, f"http.{prefix}.extraHeader", credential.header)
            add_config(env, f"http.{prefix}.followRedirects", "false")
    return env


def pipeline_credential(ctx: PhaseContext) -> Credential | None:
    """The credential of this pipeline's fetch (see `choose_credential`)."""
    github_token = ctx.settings.github_token
    return choose_credential(
        ctx.repo_url,
        repo_token=ctx.repo_token,
        github_token=github_token.get_secret_value() if github_token else None,
        github_token_hosts=ctx.settings.github_token_hosts,
    )


def choose_credential(
    repo_url: str,
    *,
    repo_token: str | None,
    github_token: str | None,
    github_token_hosts: Sequence[str],
) -> Credential | None:
    """Which token a fetch of `repo_url` may send, and to which URL prefixes.

    A repo's own token was given for that repository: it goes to the host of the repo's URL
    and nowhere else, and it replaces GITHUB_TOKEN (two Authorization headers would be
    refused). GITHUB_TOKEN is the operator's, valid wherever the operator says: it goes to the
    hosts of GITHUB_TOKEN_HOSTS whatever host a registered repo names, so a repo on another
    host is fetched without it. Nothing is sent over plain http.
    """
    if repo_token:
        if urlsplit(repo_url).scheme != CREDENTIAL_SCHEME:
            return None
        return Credential(REPO_CREDENTIAL, (f"{origin(repo_url)}/",), auth_header(repo_token))
    if github_token and github_token_hosts:
        prefixes = tuple(f"{CREDENTIAL_SCHEME}://{host}/" for host in github_token_hosts)
        return Credential(OPERATOR_CREDENTIAL, prefixes, auth_header(github_token))
    return None


def _log_credential(ctx: PhaseContext) -> None:
    """Say which token goes where (never the token itself), so that a 401 explains itself."""
    credential = pipeline_credential(ctx)
    if credential is not None:
        ctx.log(f"{credential.source} is sent only to {', '.join(credential.prefixes)}")
    scheme = urlsplit(ctx.repo_url).scheme
    if ctx.repo_token and scheme == "http":
        ctx.log(f"{REPO_CREDENTIAL} is not sent over http:// (https only)")
    elif credential is not None and credential.source == OPERATOR_CREDENTIAL:
        host = _token_host(ctx.repo_url)
        if scheme == CREDENTIAL_SCHEME and host not in ctx.settings.github_token_hosts:
            ctx.log(f"GITHUB_TOKEN is not sent to {host}: it is not in GITHUB_TOKEN_HOSTS")


def _token_host(url: str) -> str:
    """host[:port] of a URL as GITHUB_TOKEN_HOSTS spells it (lower case, no :443)."""
    return urlsplit(url).netloc.rsplit("@", 1)[-1].lower().removesuffix(":443")


def auth_header(token: str) -> str:
    """The header GitHub accepts for a token over HTTPS (as `actions/checkout` sends it)."""
    basic = base64.b64encode(f"x-access-token:{token}".encode()).decode()
    return f"Authorization: Basic {basic}"


def origin(url: str) -> str:
    """scheme://host[:port] of a URL: the header goes to the repo's host and nowhere else."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc.rsplit('@', 1)[-1]}"


def add_config(env: dict[str, str], key: str, value: str) -> None:
    """Append one git config entry through GIT_CONFIG_COUNT, keeping any the operator set."""
    count = int(env.get("GIT_CONFIG_COUNT", "0") or 0)
    env[f"GIT_CONFIG_KEY_{count}"] = key
    env[f"GIT_CONFIG_VALUE_{count}"] = value
    env["GIT_CONFIG_COUNT"] = str(count + 1)


def resolve_branch_head(ctx: PhaseContext, env: Mapping[str, str]) -> str:
    """The commit a branch points at on the remote (a manual trigger records it)."""
    ref = f"refs/heads/{ctx.branch}"
    listed = run_command(ctx, ["git", "ls-remote", "--", ctx.repo_url, ref], env=env, what="ls")
    if listed.returncode != 0:
        raise PhaseFailed(_repo_error(ctx, listed.stderr))
    for line in listed.stdout.splitlines():
        sha, _, name = line.partition("\t")
        if name == ref:
            return sha
    raise PhaseFailed(f"branch {ctx.branch!r} not found in repository {ctx.repo_url}")


def _git(ctx: PhaseContext, env: Mapping[str, str], args: list[str], what: str) -> str:
    done = run_command(ctx, ["git", *args], env=env, what=what)
    if done.returncode != 0:
        raise PhaseFailed(f"{what} failed: {ctx.redact(_tail(done.stderr))}")
    return done.stdout


def _fetch_error(ctx: PhaseContext, env: Mapping[str, str], stderr: str) -> str:
    """Say whether the repository or the commit is missing (asking the remote which)."""
    probe = run_command(ctx, ["git", "ls-remote", "--", ctx.repo_url, "HEAD"], env=env, what="ls")
    if probe.returncode != 0:
        return _repo_error(ctx, probe.stderr)
    return (
        f"commit {ctx.commit_sha} not found in repository {ctx.repo_url} "
        f"(git: {ctx.redact(_tail(stderr))})"
    )


def _repo_error(ctx: PhaseContext, stderr: str) -> str:
    message = (
        f"repository {ctx.repo_url} not found or not accessible (git: {ctx.redact(_tail(stderr))})"
    )
    if REDIRECTED.search(stderr):
        message += (
            "; the server redirects elsewhere (a moved or renamed repository?), and a fetch "
            "that carries a token follows no redirect: register the repository's new URL"
        )
    return message


def _notebook_in(checkout: Path, notebook_path: str, head: str) -> Path:
    """The notebook file inside the checkout; it must exist and not lead outside it."""
    candidate = checkout / notebook_path
    resolved = candidate.resolve()
    if not resolved.is_relative_to(checkout.resolve()):
        raise PhaseFailed(f"notebook path {notebook_path} leads outside the repository")
    if not resolved.is_file():
        raise PhaseFailed(f"notebook {notebook_path} not found at commit {head[:12]}")
    return resolved


def _tail(text: str, lines: int = 3) -> str:
    kept = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return " / ".join(kept[-lines:]) or "no output"
