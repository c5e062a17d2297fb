"""Runs a prepared notebook with papermill and reports each step as a JSON line on a pipe.

Started by the execute phase as `python -m worker.sandbox.notebook_child SPEC.json` with the
kernel's allow-listed environment, in a session of its own: the worker can kill it (and the
kernel) on cancel or timeout without touching itself, and no secret is in reach of the
notebook. Events go to a dedicated file descriptor (not stdout), so nothing the kernel or
papermill prints can corrupt them. If the worker dies, a watchdog kills this process and the
kernel rather than letting an orphaned run go on.
"""

from __future__ import annotations

import ctypes
import json
import os
import re
import resource
import sys
import threading
import time
from pathlib import Path
from typing import IO, Any

import papermill
import psutil
from nbclient.exceptions import CellTimeoutError, DeadKernelError
from nbformat import NotebookNode
from papermill.exceptions import PapermillExecutionError

from mlops_core.notebook_contract import INDEX_METADATA_KEY, RUN_TAGS, cell_tags

ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
TRACEBACK_TAIL_LINES = 12
PR_SET_DUMPABLE = 4  # <linux/prctl.h>


class EventWriter:
    """Writes one JSON object per line to the events pipe (thread-safe)."""

    def __init__(self, stream: IO[str]) -> None:
        self._stream = stream
        self._lock = threading.Lock()

    def emit(self, event_type: str, /, **fields: Any) -> None:
        line = json.dumps({"type": event_type, **fields}, default=str)
        with self._lock:
            self._stream.write(line + "\n")
            self._stream.flush()


class CellTracker:
    """nbclient hooks: cell start/finish markers, and which cell produced each output."""

    def __init__(self, events: EventWriter) -> None:
        self.events = events
        self.current: int | None = None
        self.current_tag: str | None = None
        self._started = 0.0

    def on_cell_execute(self, cell: NotebookNode, cell_index: int) -> None:
        self.current = cell.metadata.get(INDEX_METADATA_KEY)
        self.current_tag = _cell_label(cell)
        self._started = time.monotonic()
        self.events.emit("cell_start", index=self.current, tag=self.current_tag)

    def on_cell_executed(
        self, cell: NotebookNode, cell_index: int, execute_reply: dict[str, Any]
    ) -> None:
        status = execute_reply.get("content", {}).get("status", "ok")
        self.events.emit(
            "cell_end",
            index=self.current,
            tag=self.current_tag,
            status=status,
            seconds=round(time.monotonic() - self._started, 3),
        )

    def stream(self, name: str) -> OutputStream:
        return OutputStream(self, name)


class OutputStream:
    """The file-like object papermill writes a cell's stdout/stderr to, chunk by chunk."""

    def __init__(self, tracker: CellTracker, name: str) -> None:
        self._tracker = tracker
        self._name = name

    def write(self, text: str) -> int:
        if text:
            self._tracker.events.emit(
                "output", index=self._tracker.current, stream=self._name, text=text
            )
        return len(text)

    def flush(self) -> None:
        """Each chunk is sent as it is written."""


def _cell_label(cell: NotebookNode) -> str:
    tags = cell_tags(cell)
    return next((t for t in tags if t in RUN_TAGS), None) or next(iter(tags), "untagged")


def watch_parent(parent_pid: int) -> None:
    """Kill this process and its kernel as soon as the process that started it is gone.

    In the sandbox that parent is bubblewrap, which dies with the worker; unconfined
    (KERNEL_SANDBOX=off) it is the worker itself.
    """
    me = psutil.Process()
    while os.getppid() == parent_pid:
        time.sleep(0.5)
    for child in me.children(recursive=True):
        child.kill()
    os._exit(70)


def run(spec: dict[str, Any], events: EventWriter) -> dict[str, Any]:
    """Execute the notebook, sending cell and output events; return the result event's fields."""
    tracker = CellTracker(events)
    try:
        papermill.execute_notebook(
            spec["input"],
            spec["output"],
            parameters=spec["parameters"],
            kernel_name="python3",
            language="python",
            cwd=spec["cwd"],
            progress_bar=False,
            request_save_on_cell_execute=False,
            execution_timeout=spec["cell_timeout"],
            skip_cells_with_tag=spec["skip_tag"],
            stdout_file=tracker.stream("stdout"),
            stderr_file=tracker.stream("stderr"),
            on_cell_execute=tracker.on_cell_execute,
            on_cell_executed=tracker.on_cell_executed,
        )
    except PapermillExecutionError as exc:
        return {
            "ok": False,
            "kind": "error",
            "index": tracker.current,
            "tag": tracker.current_tag,
            "message": f"{exc.ename}: {exc.evalue}",
            "traceback": _tail(exc.traceback),
        }
    except CellTimeoutError:
        return {
            "ok": False,
            "kind": "timeout",
            "index": tracker.current,
            "tag": tracker.current_tag,
        }
    except DeadKernelError:
        return {
            "ok": False,
            "kind": "dead_kernel",
            "index": tracker.current,
            "tag": tracker.current_tag,
        }
    except Exception as exc:  # any other failure of papermill/nbclient, reported to the worker
        return {
            "ok": False,
            "kind": "failure",
            "index": tracker.current,
            "tag": tracker.current_tag,
            "message": f"{type(exc).__name__}: {exc}",
        }
    return {"ok": True}


def kernel_peak_rss_bytes() -> int:
    """Peak resident memory of the largest process this one started and waited for: the kernel
    (papermill has shut it down and reaped it by now), or a process the kernel itself reaped.

    Linux keeps that maximum for waited-for children (`getrusage(RUSAGE_CHILDREN)`, in KiB):
    no sampling, so no spike is missed however short.
    """
    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024


def _tail(traceback: list[str]) -> list[str]:
    lines = [line for chunk in traceback for line in ANSI_ESCAPE.sub("", chunk).splitlines()]
    return [line for line in lines if line.strip()][-TRACEBACK_TAIL_LINES:]


def refuse_tracing() -> None:
    """Make this process non-dumpable: the kernel it starts runs as the same uid, and could
    otherwise ptrace it, or open its events pipe through /proc, and forge its events."""
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_DUMPABLE, 0, 0, 0, 0)


def main() -> None:
    refuse_tracing()
    spec = json.loads(Path(sys.argv[1]).read_text())
    threading.Thread(target=watch_parent, args=(os.getppid(),), daemon=True).start()
    with os.fdopen(spec["events_fd"], "w", encoding="utf-8") as stream:
        events = EventWriter(stream)
        result = run(spec, events)
        events.emit("result", **result, kernel_peak_rss_bytes=kernel_peak_rss_bytes())


if __name__ == "__main__":
    main()
