"""Child processes the worker can stop at once: on cancel, on the pipeline deadline, or on exit.

Every child starts in its own session, so killing it never touches the Celery worker, and
is killed together with everything it started (mlops_core/runner_process.py's `kill_tree`).
"""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from mlops_core.runner_process import kill_tree
from worker.phases.context import PhaseContext, PhaseFailed, PipelineCancelled


@dataclass
class Completed:
    """Exit code and captured output of a finished command."""

    returncode: int
    stdout: str
    stderr: str


def start_child(
    args: Sequence[str],
    *,
    env: Mapping[str, str],
    cwd: Path | None = None,
    stdin_pipe: bool = False,
) -> subprocess.Popen[str]:
    """Start a child in its own session with captured output (and a stdin pipe if asked)."""
    return subprocess.Popen(
        list(args),
        env=dict(env),
        cwd=cwd,
        stdin=subprocess.PIPE if stdin_pipe else subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def wait_child(
    ctx: PhaseContext, proc: subprocess.Popen[str], *, what: str, stdin: str | None = None
) -> Completed:
    """Wait for a child, stopping it on cancel or when the pipeline runs out of time."""
    try:
        pending_input = stdin
        while True:
            try:
                stdout, stderr = proc.communicate(input=pending_input, timeout=0.2)
                return Completed(proc.returncode, stdout, stderr)
            except subprocess.TimeoutExpired:
                pending_input = None  # sent with the first call; never twice
                if ctx.cancelled:
                    raise PipelineCancelled from None
                if ctx.remaining() <= 0:
                    raise PhaseFailed(
                        f"{what} did not finish within the pipeline time limit "
                        f"(PIPELINE_TIMEOUT_SECONDS={ctx.settings.pipeline_timeout_seconds})"
                    ) from None
    finally:
        stop_child(proc)


def stop_child(proc: subprocess.Popen[str]) -> None:
    """Kill a child (and its descendants) if it is still running, and reap it."""
    if proc.poll() is None:
        kill_tree(proc.pid)
        with contextlib.suppress(subprocess.TimeoutExpired, ValueError, OSError):
            proc.communicate(timeout=5)


def run_command(
    ctx: PhaseContext,
    args: Sequence[str],
    *,
    env: Mapping[str, str],
    cwd: Path | None = None,
    what: str,
) -> Completed:
    """Run a short command, stopping it on cancel or when the pipeline runs out of time."""
    return wait_child(ctx, start_child(args, env=env, cwd=cwd), what=what)
