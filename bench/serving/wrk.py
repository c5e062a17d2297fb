"""wrk, the load generator: one POST body at a fixed number of connections, figures as JSON.

wrk's text report rounds and switches units (us/ms/s, k/M); a Lua `done` hook prints the raw
counts and percentiles instead, on one line that `parse_summary` reads. wrk is Debian's package
(installed by scripts/ensure_debian_packages.sh). It is a closed loop: each connection sends its
next request when the previous answer arrives, so requests/s is what the server sustains.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
SUMMARY_MARK = "WRK_SUMMARY "

# Read the body from a file (a 1,000-row body is too long for an argument), POST it as JSON, and
# report at the end. wrk counts an answer of status >= 400 as a `status` error.
LUA_SCRIPT = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local file = assert(io.open(os.getenv("WRK_BODY_FILE"), "rb"))
wrk.body = file:read("*a")
file:close()

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '%s{"requests": %d, "duration_us": %d, "connect": %d, "read": %d, "write": %d, '
      .. '"status": %d, "timeout": %d, "p50_us": %d, "p99_us": %d}\\n',
    "WRK_SUMMARY ", summary.requests, summary.duration, e.connect, e.read, e.write,
    e.status, e.timeout, latency:percentile(50), latency:percentile(99)))
end
"""


@dataclass(frozen=True)
class WrkSummary:
    """One wrk run: completed requests, its length, latency percentiles and errors by kind."""

    requests: int
    seconds: float
    p50_ms: float
    p99_ms: float
    errors: dict[str, int]

    @property
    def requests_per_second(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())


def parse_summary(output: str) -> WrkSummary:
    """The summary line LUA_SCRIPT's `done` printed in wrk's output."""
    for line in output.splitlines():
        if line.startswith(SUMMARY_MARK):
            raw = json.loads(line[len(SUMMARY_MARK) :])
            return WrkSummary(
                requests=raw["requests"],
                seconds=raw["duration_us"] / 1e6,
                p50_ms=raw["p50_us"] / 1000,
                p99_ms=raw["p99_us"] / 1000,
                errors={
                    kind: raw[kind] for kind in ("connect", "read", "write", "status", "timeout")
                },
            )
    raise ValueError(f"no {SUMMARY_MARK.strip()} line in wrk's output:\n{output[-2000:]}")


def ensure_wrk() -> str:
    """wrk's path, installing Debian's package first when it is missing (root or sudo)."""
    subprocess.run([REPO_ROOT / "scripts" / "ensure_debian_packages.sh", "wrk:wrk"], check=True)
    found = shutil.which("wrk")
    if found is None:
        raise SystemExit("wrk is not installed and could not be: apt-get install wrk, then rerun")
    return found


def run_wrk(
    wrk: str,
    url: str,
    body_file: Path,
    *,
    connections: int,
    seconds: int,
    script: Path,
    timeout_seconds: int = 30,
) -> WrkSummary:
    """POST `body_file` to `url` from `connections` connections (one wrk thread) for `seconds`.

    One thread leaves the other core to the server on a 2-core machine; wrk in C keeps up with
    far more requests than these Python servers answer. A request slower than `timeout_seconds`
    counts as a timeout error (wrk's default of 2 s would cut off a 1,000-row forest under load).
    """
    completed = subprocess.run(
        [
            wrk,
            *("--threads", "1", "--connections", str(connections)),
            *("--duration", f"{seconds}s", "--timeout", f"{timeout_seconds}s"),
            *("--script", str(script), url),
        ],
        env={**os.environ, "WRK_BODY_FILE": str(body_file)},
        capture_output=True,
        text=True,
        timeout=seconds + timeout_seconds + 30,
        check=False,
    )
    if completed.returncode != 0:
        raise RuntimeError(f"wrk failed ({completed.returncode}): {completed.stderr[-2000:]}")
    return parse_summary(completed.stdout)


def write_script(folder: Path) -> Path:
    """LUA_SCRIPT as a file wrk can load."""
    path = folder / "post.lua"
    path.write_text(LUA_SCRIPT)
    return path
