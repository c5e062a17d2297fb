"""What a pipeline shows of its commit (message, author, web link), from either side.

The backend reads it from a push payload (backend/push_commit.py); for a run no push described
(manual, scheduled) the worker's fetch reads it from git and derives the link from the repo's
URL. Both keep the same bounds, and a link only when it is an http(s) URL, so no stored field
can put a `javascript:` link on a page.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final
from urllib.parse import urlsplit

# The columns' sizes (mlops_core/schema.py); a message is cut, never refused.
MAX_MESSAGE: Final = 10_000
MAX_AUTHOR: Final = 255
MAX_URL: Final = 1000


@dataclass(frozen=True)
class CommitInfo:
    """What a pipeline shows of its commit; any part may be unknown."""

    message: str | None = None
    author: str | None = None
    url: str | None = None

    @classmethod
    def bounded(cls, message: object, author: object, url: object) -> CommitInfo:
        """The parts that are usable text, cut to the columns' sizes; a link only if http(s)."""
        return cls(_text(message, MAX_MESSAGE), _text(author, MAX_AUTHOR), web_url(url))


def _text(value: object, limit: int) -> str | None:
    if not isinstance(value, str) or not value.strip():
        return None
    return value.strip()[:limit]


def web_url(value: object) -> str | None:
    """`value` when it is an http(s) URL short enough to keep, else None."""
    if not isinstance(value, str) or len(value) > MAX_URL:
        return None
    try:
        parts = urlsplit(value)
    except ValueError:
        return None
    return value if parts.scheme in {"http", "https"} and parts.netloc else None


def commit_web_url(repo_url: str, sha: str) -> str | None:
    """The commit's page for a repository registered by its https URL (GitHub's layout,
    `https://host/owner/repo/commit/<sha>`); None for local and ssh-only repositories."""
    if not repo_url.startswith("https://"):
        return None
    return web_url(f"{repo_url.rstrip('/')}/commit/{sha}")
