"""One canonical form per repository URL, shared by the backend (registration, webhook matching)
and the worker (cloning).

GitHub names are case-insensitive and reachable under several spellings (https with or without
`.git`, scp-style ssh, `ssh://`), so a repo registered once must be recognised under each of them;
otherwise a second registration slips past the uniqueness check and a push finds no repo.
The canonical form is `https://<host>/<owner>/<repo>` in lower case, which `git clone` accepts.
Local repositories (demo, tests) become absolute `file://` URLs, case kept.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

_NAME = r"[A-Za-z0-9_.-]+"
_SCP_SSH = re.compile(
    rf"^(?:[A-Za-z0-9_.-]+@)?(?P<host>[A-Za-z0-9.-]+):(?P<path>{_NAME}/{_NAME})/?$"
)
_OWNER_REPO = re.compile(rf"^(?P<owner>{_NAME})/(?P<repo>{_NAME})$")
_LOCAL_PREFIXES = ("/", "./", "../", "~")
_REMOTE_SCHEMES = {"https", "http", "ssh", "git"}


class RepoUrlError(ValueError):
    """A repository URL the platform will not accept; the message says why and what would work."""


def normalize_repo_url(url: str, *, allow_local: bool = False) -> str:
    """Return the canonical form of `url`, or raise RepoUrlError naming the problem.

    Accepted: `https://host/owner/repo[.git]`, `git@host:owner/repo.git`, `ssh://git@host/owner/repo`
    and, with `allow_local`, `file://` URLs and local paths.
    """
    text = url.strip()
    if not text:
        raise RepoUrlError("must not be empty")
    if text.startswith("file:") or text.startswith(_LOCAL_PREFIXES):
        if not allow_local:
            raise RepoUrlError(
                "local repositories are accepted only when ALLOW_LOCAL_REPOS=true; "
                "use an https GitHub URL such as https://github.com/owner/repo"
            )
        return _local_url(text)
    scp = _SCP_SSH.match(text)
    if scp and "://" not in text:
        return _canonical(scp["host"], scp["path"])
    parts = urlsplit(text)
    if parts.scheme not in _REMOTE_SCHEMES or not parts.hostname:
        raise RepoUrlError(
            f"{text!r} is not a repository URL; expected https://github.com/owner/repo"
        )
    if parts.scheme in {"http", "git"}:
        raise RepoUrlError("unencrypted URLs are not accepted; use https://")
    if parts.password is not None or (parts.username and parts.scheme == "https"):
        raise RepoUrlError(
            "credentials must not be part of the URL; pass the token as github_token"
        )
    if parts.query or parts.fragment:
        raise RepoUrlError("must not carry a query or fragment")
    host = parts.hostname
    if parts.scheme == "https":
        try:
            port = parts.port
        except ValueError as exc:
            raise RepoUrlError(f"{text!r} has an invalid port") from exc
        if port not in (None, 443):
            host = f"{host}:{port}"
    return _canonical(host, parts.path)


def _canonical(host: str, path: str) -> str:
    clean = path.strip("/")
    if clean.endswith(".git"):
        clean = clean[: -len(".git")]
    match = _OWNER_REPO.match(clean)
    if not match or match["repo"] in {".", ".."} or match["owner"] in {".", ".."}:
        raise RepoUrlError(
            f"must name exactly an owner and a repository (https://{host}/owner/repo), got {path!r}"
        )
    return f"https://{host.lower()}/{clean.lower()}"


def _local_url(text: str) -> str:
    path = unquote(urlsplit(text).path) if text.startswith("file:") else text
    if not path:
        raise RepoUrlError("a file:// URL must carry a path")
    absolute = os.path.normpath(os.path.abspath(os.path.expanduser(path)))
    return Path(absolute).as_uri()


def is_local(canonical_url: str) -> bool:
    """Whether a canonical URL points at a local repository."""
    return canonical_url.startswith("file://")


def payload_repo_urls(repository: Mapping[str, Any]) -> list[str]:
    """Canonical URLs under which a webhook payload's `repository` object names its repo.

    Spellings that do not parse are skipped: the payload is untrusted until its signature is
    checked, and a missing or odd field must simply fail to match rather than raise.
    """
    urls: list[str] = []
    for key in ("clone_url", "html_url", "ssh_url", "git_url"):
        value = repository.get(key)
        if not isinstance(value, str):
            continue
        try:
            canonical = normalize_repo_url(_as_https_if_git(value), allow_local=True)
        except RepoUrlError:
            continue
        if canonical not in urls:
            urls.append(canonical)
    return urls


def payload_full_name(repository: Mapping[str, Any]) -> str | None:
    """`owner/repo` in lower case from the payload, when it is well formed."""
    value = repository.get("full_name")
    if isinstance(value, str) and _OWNER_REPO.match(value):
        return value.lower()
    return None


def _as_https_if_git(url: str) -> str:
    """GitHub's `git_url` uses the retired git:// protocol; it still names the same repo."""
    return "https://" + url[len("git://") :] if url.startswith("git://") else url
