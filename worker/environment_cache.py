"""Installed requirements.txt environments, kept by hash and shared by every pipeline.

Installing a notebook's requirements.txt downloads and unpacks wheels on every run; most runs
of a notebook list the same packages. An environment is kept under a key hashing everything
that decides what pip installs: the file's bytes, the Python version and implementation, the
platform, the kernel's own packages (pip resolves against them as constraints) and the package
index. A later run with the same key reuses it and runs no pip.

Why sharing cannot poison it:
- it is written by the worker alone, from a pip run that ran no code of the repository (wheels
  only, arguments the platform chose: worker/requirements_install.py), before the pipeline's
  kernel starts;
- the worker takes pip's folder over (its own uid, no write for anyone else) before publishing
  it, and every sandbox sees it read-only (mlops_core/sandbox.py binds it read-only and hides
  the rest of the cache);
- an entry appears whole or not at all: it is prepared under a unique temporary name in the
  cache folder and renamed to its key, which is atomic. When two runs with the same key install
  at once, the first rename wins and the other run drops its copy and uses the winner's.

Unpinned requirements (`toolz`) resolve once per key: a newer release is picked up when the
file changes, or after the entry's folder is removed. With KERNEL_SANDBOX=off notebooks run as
the worker's user and could change the cache, as they could change anything else of the worker.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import platform
import shutil
import stat
import sys
import sysconfig
import time
import uuid
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

from mlops_core.settings import Settings

FOLDER_NAME: Final = "environments"
# Written last into an entry before it is renamed into place: what it holds and for what.
MANIFEST: Final = "environment.json"
PARTIAL_PREFIX: Final = ".partial-"
# A partial entry this old was left by a worker that died while publishing.
STALE_PARTIAL_SECONDS: Final = 24 * 3600


def cache_root(settings: Settings) -> Path:
    """REQUIREMENTS_CACHE_DIR, or the folder `environments` in MLOPS_HOME."""
    root = settings.requirements_cache_dir or settings.mlops_home / FOLDER_NAME
    return root.resolve()


def environment_key(
    requirements: bytes, kernel_packages: Iterable[tuple[str, str]], index_url: str
) -> str:
    """The hex SHA-256 naming the environment pip would install for this file here."""
    facts = {
        "requirements": hashlib.sha256(requirements).hexdigest(),
        "python": sys.version,
        "implementation": sys.implementation.name,
        "platform": sysconfig.get_platform(),
        "libc": platform.libc_ver(),
        "kernel": sorted(f"{name.lower()}=={version}" for name, version in kernel_packages),
        "index": index_url,
    }
    return hashlib.sha256(json.dumps(facts, sort_keys=True).encode()).hexdigest()


def lookup(root: Path, key: str) -> Path | None:
    """The environment published under `key`, if there is one."""
    entry = root / key
    return entry if (entry / MANIFEST).is_file() else None


def manifest(entry: Path) -> dict[str, Any]:
    """What an entry says about itself (empty when unreadable)."""
    try:
        return json.loads((entry / MANIFEST).read_text())
    except (OSError, ValueError):
        return {}


def publish(root: Path, key: str, built: Path, about: dict[str, Any]) -> Path:
    """Move the environment pip built into the cache under `key`; return the entry to use.

    `built` is consumed (moved, or copied when the cache is on another filesystem). When
    another run published the same key first, its entry is returned and this one dropped.
    """
    root.mkdir(parents=True, exist_ok=True)
    _drop_stale_partials(root)
    partial = root / f"{PARTIAL_PREFIX}{key[:16]}-{uuid.uuid4().hex}"
    try:
        os.rename(built, partial)
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise
        shutil.copytree(built, partial, symlinks=True)
        shutil.rmtree(built, ignore_errors=True)
    try:
        _take_over(partial)
        record = {**about, "key": key, "created_at": datetime.now(UTC).isoformat()}
        (partial / MANIFEST).write_text(json.dumps(record, indent=2))
        os.chmod(partial / MANIFEST, 0o644)
        final = root / key
        try:
            os.rename(partial, final)
        except OSError as exc:
            # ENOTEMPTY/EEXIST: published by another run meanwhile; that one is whole, use it.
            if exc.errno not in (errno.EEXIST, errno.ENOTEMPTY):
                raise
        return final
    finally:
        shutil.rmtree(partial, ignore_errors=True)  # nothing left once the rename succeeded


def _take_over(folder: Path) -> None:
    """Make everything in `folder` the worker's, readable by all and writable by it alone.

    pip ran as the sandbox's uid; a sandbox of the same uid must not be able to change what
    other pipelines will import. Links are kept as links (they resolve with the reader's rights).
    """
    uid, gid = os.geteuid(), os.getegid()
    paths = [folder]
    for parent, dirs, files in os.walk(folder):  # never into a linked folder
        paths += [Path(parent, name) for name in (*dirs, *files)]
    for path in paths:
        mode = os.lstat(path).st_mode
        os.chown(path, uid, gid, follow_symlinks=False)
        if stat.S_ISLNK(mode):
            continue
        # Every sandbox's uid reads and imports from it; only the worker writes.
        if stat.S_ISDIR(mode) or mode & 0o111:
            os.chmod(path, 0o755)  # noqa: S103
        else:
            os.chmod(path, 0o644)


def _drop_stale_partials(root: Path) -> None:
    """Remove what a worker that died while publishing left behind."""
    cutoff = time.time() - STALE_PARTIAL_SECONDS
    for leftover in root.glob(f"{PARTIAL_PREFIX}*"):
        try:
            if leftover.lstat().st_mtime < cutoff:
                shutil.rmtree(leftover, ignore_errors=True)
        except OSError:
            continue
