"""fetch: exactly the pushed commit, shallow, into a fresh folder, with the git command line.

The git CLI (not a library) so that the operator's git configuration applies: proxies,
`url.<base>.insteadOf`, credential helpers, CA bundles. A repo token travels as an HTTP
header set through git's environment-based configuration (GIT_CONFIG_COUNT/KEY_n/VALUE_n),
scoped to the repository's origin: it never appears in the URL, in a process argument
(visible to every user in `ps`) or in a log line.
"""

from __future__ import annotations

import base64
import re
import shutil
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import urlsplit

from worker.child_processes import run_command
from worker.kernel_env import git_environment
from worker.phases.context import PhaseContext, PhaseFailed

ALLOWED_SCHEMES = ("https", "http", "file")
FULL_SHA = re.compile(r"^[0-9a-f]{40}([0-9a-f]{24})?$")


def run(ctx: PhaseContext) -> None:
    """Check out the pipeline's commit into `ctx.work_dir / "repo"`; resolve it first if unset."""
    scheme = urlsplit(ctx.repo_url).scheme
    if scheme not in ALLOWED_SCHEMES or (scheme == "file" and not ctx.settings.allow_local_repos):
        raise PhaseFailed(
            f"repository URL {ctx.repo_url} is not allowed (https, or file:// "
            "with ALLOW_LOCAL_REPOS=true)"
        )
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


def git_env(ctx: PhaseContext, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """git's environment, with the repo token (if any) as an Authorization header config."""
    env = git_environment(ctx.settings, base)
    if ctx.repo_token and urlsplit(ctx.repo_url).scheme in ("http", "https"):
        add_config(env, f"http.{origin(ctx.repo_url)}/.extraHeader", auth_header(ctx.repo_token))
    return env


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
    return (
        f"repository {ctx.repo_url} not found or not accessible (git: {ctx.redact(_tail(stderr))})"
    )


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
