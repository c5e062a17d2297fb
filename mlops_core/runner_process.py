"""The notebook runner as a child process: started, its output relayed line by line as it
comes, and killed with everything it started when its caller stops it.

Both callers of mlops_core/notebook_runner.py go through `run_notebook`: the worker's execute
phase (inside the kernel sandbox, stopped on cancel and at the pipeline deadline) and
`mlops run` (unsandboxed, or in the same sandbox with --sandbox; stopped by Ctrl-C). One loop,
so a local run's log, its failure on a runner that died, and its clean-up are the pipeline's.
"""

from __future__ import annotations

import contextlib
import json
import os
import selectors
import signal
import subprocess
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import nbformat
import psutil

from mlops_core import notebook_run_log, sandbox
from mlops_core.notebook_run_log import LogLine
from mlops_core.notebook_runner import RunFolder

# How often the caller's `check` runs while the runner is quiet.
POLL_SECONDS: Final = 0.2
# How long the runner may take to exit once it has closed its output, before it is killed.
EXIT_GRACE_SECONDS: Final = 10


@dataclass(frozen=True)
class RunnerExit:
    """How the runner ended: its result event (None: it died without one) and exit code."""

    result: dict[str, Any] | None
    returncode: int | None


def kill_tree(pid: int) -> None:
    """SIGKILL a process, its process group and every descendant (kernels included).

    A Jupyter kernel starts in a session of its own, so the process group alone would miss it:
    the tree is walked with psutil.
    """
    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        procs = []
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)
    for proc in procs:
        with contextlib.suppress(psutil.NoSuchProcess):
            proc.kill()


def _keep_going() -> None:
    """The default `check`: nothing stops a run but its end (or Ctrl-C)."""


def run_notebook(
    folder: RunFolder,
    command: Sequence[str],
    *,
    cwd: Path,
    env: Mapping[str, str],
    parameters: dict[str, Any],
    cell_timeout: int,
    log: Callable[[LogLine], None],
    check: Callable[[], None] = _keep_going,
) -> RunnerExit:
    """Write the runner's spec, start `command`, log the runner's lines until it ends.

    `command` runs `python -I -m RUNNER_MODULE folder.spec_path`, wrapped in the sandbox or
    not (the caller's choice). The runner starts in a session of its own with only `env`, and
    reports on a pipe of its own (the spec names its descriptor). `check` runs between reads:
    what it raises stops the run, after the runner and its kernel are killed.
    """
    read_fd, write_fd = os.pipe()
    try:
        spec = folder.runner_spec(
            cwd=cwd, parameters=parameters, cell_timeout=cell_timeout, events_fd=write_fd
        )
        folder.spec_path.write_text(json.dumps(spec))  # a sandbox reads it, never writes it
        proc = subprocess.Popen(
            list(command),
            env=dict(env),
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            pass_fds=(write_fd,),
            start_new_session=True,
        )
    except BaseException:
        os.close(read_fd)
        raise
    finally:
        os.close(write_fd)
    log(LogLine(f"kernel starting (cell timeout {cell_timeout} s)", "system", None))
    try:
        result = _pump(proc, read_fd, log, check)
    finally:
        if proc.poll() is None:
            kill_tree(proc.pid)
        proc.wait()
        os.close(read_fd)
    return RunnerExit(result, proc.returncode)


def _pump(
    proc: subprocess.Popen[bytes],
    events_fd: int,
    log: Callable[[LogLine], None],
    check: Callable[[], None],
) -> dict[str, Any] | None:
    """Log the runner's events and its own output as they come; return its result event."""
    assert proc.stdout is not None
    selector = selectors.DefaultSelector()
    selector.register(events_fd, selectors.EVENT_READ, "events")
    selector.register(proc.stdout.fileno(), selectors.EVENT_READ, "stdio")
    buffers = {"events": b"", "stdio": b""}
    result: dict[str, Any] | None = None
    open_streams = 2
    while open_streams:
        try:
            check()
        except BaseException:
            kill_tree(proc.pid)
            raise
        for key, _ in selector.select(timeout=POLL_SECONDS):
            chunk = os.read(key.fd, 65536)
            if not chunk:
                selector.unregister(key.fd)
                open_streams -= 1
                lines, buffers[key.data] = [buffers[key.data]], b""
            else:
                lines = (buffers[key.data] + chunk).split(b"\n")
                buffers[key.data] = lines.pop()
            for raw in lines:
                if not raw:
                    continue
                if key.data == "stdio":
                    line = notebook_run_log.runner_line(raw.decode("utf-8", "replace"))
                else:
                    event = json.loads(raw)
                    if event["type"] == "result":
                        result = event
                        continue
                    line = notebook_run_log.event_line(event)
                if line is not None:
                    log(line)
    selector.close()
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=EXIT_GRACE_SECONDS)
    return result


def read_executed(path: Path) -> nbformat.NotebookNode | None:
    """The executed notebook the runner wrote, if it is a plain file holding a notebook
    (a sandboxed kernel may have replaced it with a link or a FIFO, or written anything)."""
    stream = sandbox.open_written(path)
    if stream is None:
        return None
    with stream:
        try:
            return nbformat.reads(stream.read().decode("utf-8"), as_version=4)
        except Exception:  # the sandbox may have written anything there
            return None
