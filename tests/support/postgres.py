"""A private PostgreSQL for the PostgreSQL variants of the tests, never the machine's own.

scripts/private_postgres.sh does the work (Debian's binaries, initdb into a folder of its own,
a free loopback port, as `nobody` when root); this starts and stops it for a test session.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

from tests.support.import_closure import ROOT

SCRIPT = ROOT / "scripts" / "private_postgres.sh"


class PrivatePostgres:
    """One private cluster; `url` is its admin URL (user postgres, database test)."""

    def __init__(self) -> None:
        # Under /tmp itself, not pytest's 0700 temporary folders: `nobody` must reach it.
        self.folder = Path(tempfile.mkdtemp(prefix="mlops-test-postgres-"))
        self.url: str | None = None

    def start(self) -> str | None:
        """The admin URL, or None when no PostgreSQL binaries are installed."""
        result = subprocess.run(
            ["bash", str(SCRIPT), "start", str(self.folder)],
            capture_output=True,
            text=True,
            timeout=120,
        )
        if result.returncode != 0:
            raise RuntimeError(f"private PostgreSQL did not start: {result.stderr.strip()}")
        prefix = "export TEST_DATABASE_URL="
        lines = [line for line in result.stdout.splitlines() if line.startswith(prefix)]
        self.url = lines[0].removeprefix(prefix) if lines else None
        return self.url

    def stop(self) -> None:
        subprocess.run(
            ["bash", str(SCRIPT), "stop", str(self.folder)],
            capture_output=True,
            timeout=60,
            check=False,
        )
        shutil.rmtree(self.folder, ignore_errors=True)
