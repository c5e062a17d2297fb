"""One canonical form per repository URL, shared by the backend (registration, webhook matching)
and the worker (cloning).

GitHub names are case-insensitive and reachable under several spellings (https with or without
`.git`, scp-style ssh, `ssh://`), so a repo registered once must be recognised under each of them;
otherwise a second registration slips past the uniqueness check and a push finds no repo.
The canonical form is `https://<host>/<owner>/<repo>` in lower case, which `git clone` accepts.
Two spellings keep more: an IPv6 host stays in brackets (`https://[fd00::1]:8443/o/r`), and an
`ssh://` URL on a port other than 22 stays an ssh URL with its user and port: its https address
cannot be derived from it. Local repositories (demo, tests) become absolute `file://` URLs,
case kept.

The worker clones whatever URL is registered, from inside the platform's network; so by default
a URL whose host is an IP address or a localhost-like name is refused (ALLOW_PRIVATE_REPO_HOSTS
lifts that). Names are judged as written, not resolved: registration works offline, and a name
whose DNS answer points inside the network is not caught here.
"""

from __future__ import annotations

import ipaddress
import os
import re
import socket
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import SplitResult, unquote, urlsplit

_NAME = r"[A-Za-z0-9_.-]+"
_SCP_SSH = re.compile(
    rf"^(?:[A-Za-z0-9_.-]+@)?(?P<host>[A-Za-z0-9.-]+):(?P<path>{_NAME}/{_NAME})/?$"
)
_OWNER_REPO = re.compile(rf"^(?P<owner>{_NAME})/(?P<repo>{_NAME})$")
_LOCAL_PREFIXES = ("/", "./", "../", "~")
_REMOTE_SCHEMES = {"https", "http", "ssh", "git"}
_SSH_PORT = 22
# Names that stay on this machine or its local network (RFC 6761, mDNS, cloud metadata).
_LOCAL_NAMES = {"localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback"}
_LOCAL_SUFFIXES = (".localhost", ".local", ".internal", ".home.arpa")
# The last label of a host that URL parsers and resolvers read as an IPv4 number
# ("127.1", "2130706433", "0x7f.1" all reach 127.0.0.1).
_NUMERIC_LABEL = re.compile(r"^(0x[0-9a-f]*|[0-9]+)$")


class RepoUrlError(ValueError):
    """A repository URL the platform will not accept; the message says why and what would work."""


def normalize_repo_url(
    url: str, *, allow_local: bool = False, allow_private_hosts: bool = False
) -> str:
    """Return the canonical form of `url`, or raise RepoUrlError naming the problem.

    Accepted: `https://host/owner/repo[.git]`, `git@host:owner/repo.git`, `ssh://git@host/owner/repo`
    and, with `allow_local`, `file://` URLs and local paths; hosts that are IP addresses or
    localhost-like only with `allow_private_hosts`.
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
        _check_host(scp["host"], allow_private_hosts)
        return _canonical(f"https://{scp['host'].lower()}", scp["path"])
    try:
        parts = urlsplit(text)
    except ValueError as exc:  # e.g. an unclosed IPv6 bracket
        raise RepoUrlError(f"{text!r} is not a valid URL: {exc}") from exc
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
    _check_host(parts.hostname, allow_private_hosts)
    return _canonical(_origin(parts, text), parts.path)


def _origin(parts: SplitResult, text: str) -> str:
    """`https://host[:port]`, or `ssh://[user@]host:port` for ssh on a port other than 22."""
    assert parts.hostname is not None
    try:
        port = parts.port
    except ValueError as exc:
        raise RepoUrlError(f"{text!r} has an invalid port") from exc
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    if parts.scheme == "ssh":
        if port in (None, _SSH_PORT):
            return f"https://{host}"
        user = f"{parts.username}@" if parts.username else ""
        return f"ssh://{user}{host}:{port}"
    return f"https://{host}" if port in (None, 443) else f"https://{host}:{port}"


def _canonical(origin: str, path: str) -> str:
    """`origin` (its host already in lower case) and `owner/repo` in lower case, no `.git`."""
    clean = path.strip("/")
    if clean.endswith(".git"):
        clean = clean[: -len(".git")]
    match = _OWNER_REPO.match(clean)
    if not match or match["repo"] in {".", ".."} or match["owner"] in {".", ".."}:
        raise RepoUrlError(
            f"must name exactly an owner and a repository ({origin}/owner/repo), got {path!r}"
        )
    return f"{origin}/{clean.lower()}"


def _check_host(host: str, allow_private_hosts: bool) -> None:
    problem = None if allow_private_hosts else host_problem(host)
    if problem is not None:
        raise RepoUrlError(
            f"{problem}; register repositories by their public host name "
            "(ALLOW_PRIVATE_REPO_HOSTS=true accepts such hosts)"
        )


def host_problem(host: str) -> str | None:
    """Why a repository on `host` may lie inside the platform's own network, else None.

    `host` is a URL's host without port (an IPv6 address without brackets). IP literals are
    refused whatever their range, as names the worker would reach without any DNS say-so;
    the message says which range the private ones are in.
    """
    name = host.lower().rstrip(".")
    address = _ip_literal(name)
    if address is not None:
        return f"host {host} is {_address_kind(address)}"
    if name in _LOCAL_NAMES or name.endswith(_LOCAL_SUFFIXES):
        return f"host {host} names this machine or its local network"
    if _NUMERIC_LABEL.match(name.rsplit(".", 1)[-1]):
        return f"host {host} is a numeric IP address"
    return None


def _ip_literal(name: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The address `name` spells, dotted or in the shorthand forms resolvers accept (`127.1`)."""
    try:
        return ipaddress.ip_address(name)
    except ValueError:
        pass
    if not _NUMERIC_LABEL.match(name.rsplit(".", 1)[-1]):
        return None
    try:
        return ipaddress.IPv4Address(socket.inet_aton(name))
    except OSError:
        return None


def _address_kind(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if address.is_loopback:
        return "a loopback address"
    if address.is_link_local:
        return "a link-local address"
    if address.is_private:
        return "a private-network address"
    return "an IP address, not a host name"


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
            canonical = normalize_repo_url(
                _as_https_if_git(value), allow_local=True, allow_private_hosts=True
            )
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
