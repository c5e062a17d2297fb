"""Watched paths: the globs of repository paths whose change retrains a repo's notebook.

A notebook reads data files and helper modules beside it, so a push that changes only
`notebooks/data.csv` must retrain as surely as one that changes the notebook. By default a repo
watches its notebook, the `requirements.txt` beside it and the notebook's folder; a notebook at
the repository root watches only itself and `requirements.txt` (its folder is the whole
repository, and a README change should not retrain). The notebook itself always counts, whatever
globs a repo sets.

Glob syntax, matched against whole paths as GitHub lists them (`notebooks/data/iris.csv`):
`*` is any run of characters within one path segment, `?` one such character, `**` any number
of whole segments (`data/**`, `**/*.csv`), and a trailing `/` means everything under that folder.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from functools import lru_cache
from pathlib import PurePosixPath
from typing import Final

REQUIREMENTS_FILE: Final = "requirements.txt"
MAX_WATCH_PATHS: Final = 50
MAX_GLOB_LENGTH: Final = 300


def default_watch_paths(notebook_path: str) -> list[str]:
    """The notebook, the requirements.txt beside it and (unless at the root) its folder."""
    folder = PurePosixPath(notebook_path).parent.as_posix()
    if folder == ".":
        return [notebook_path, REQUIREMENTS_FILE]
    return [notebook_path, f"{folder}/{REQUIREMENTS_FILE}", f"{folder}/**"]


def effective_watch_paths(notebook_path: str, watch_paths: Sequence[str] | None) -> list[str]:
    """What a repo watches: its own globs with the notebook first, or the default ones."""
    if watch_paths is None:
        return default_watch_paths(notebook_path)
    return list(dict.fromkeys([notebook_path, *watch_paths]))


def validate_glob(value: str) -> str:
    """A glob relative to the repository root, with '/' separators and no '..'."""
    text = value.strip()
    if not text:
        raise ValueError("a watched path must not be empty")
    if len(text) > MAX_GLOB_LENGTH:
        raise ValueError(f"a watched path must be at most {MAX_GLOB_LENGTH} characters")
    if "\\" in text:
        raise ValueError(f"watched path {text!r} must use '/' as separator")
    if text.startswith("/"):
        raise ValueError(f"watched path {text!r} must be relative to the repository root")
    if ".." in text.split("/"):
        raise ValueError(f"watched path {text!r} must not contain '..'")
    return text


@lru_cache(maxsize=1024)
def _compile(glob: str) -> re.Pattern[str]:
    if glob.endswith("/"):
        glob += "**"
    parts = glob.split("/")
    regex = []
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        if part == "**":
            regex.append(".*" if last else "(?:[^/]+/)*")
            continue
        for char in part:
            regex.append("[^/]*" if char == "*" else "[^/]" if char == "?" else re.escape(char))
        if not last:
            regex.append("/")
    return re.compile("".join(regex))


def matches(glob: str, path: str) -> bool:
    """Whether a repository path matches one glob."""
    return _compile(glob).fullmatch(path) is not None


def first_match(globs: Sequence[str], paths: Iterable[str]) -> tuple[str, str] | None:
    """The first (path, glob) pair where a changed path matches a watched glob."""
    for path in paths:
        for glob in globs:
            if matches(glob, path):
                return path, glob
    return None
