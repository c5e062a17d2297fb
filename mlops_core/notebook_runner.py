"""Runs a prepared notebook with papermill and reports each step as a JSON line on a pipe.

Started as `python -m mlops_core.notebook_runner SPEC.json` by the worker's execute phase (in
the kernel sandbox, with the kernel's allow-listed environment) and by `mlops run` (on the
user's machine), so a local run selects, injects and reports cells exactly as a pipeline does.
It runs in a session of its own: its parent can kill it (and the kernel) on cancel or timeout
without touching itself, and no secret is in reach of the notebook. Events go to a dedicated
file descriptor (not stdout), so nothing the kernel or papermill prints can corrupt them. If
the parent dies, a watchdog kills this process and the kernel rather than letting an orphaned
run go on.
"""

from __future__ import annotations

import ctypes
import json
import os
import resource
import sys
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import psutil
from nbformat import NotebookNode

from mlops_core.cell_traceback import RanCell, cell_failure
from mlops_core.notebook_contract import INDEX_METADATA_KEY, RUN_TAGS, SKIP_TAG, cell_tags

# The MLflow file store the notebook logs to, in the run's work folder (mlops_core/run_store.py).
STORE_DIR = "mlruns"
# `python -m RUNNER_MODULE SPEC.json` runs a notebook.
RUNNER_MODULE = "mlops_core.notebook_runner"
# Copied into the kernel's IPython profile (the kernel does not import the platform).
KERNEL_STARTUP = Path(__file__).resolve().parent / "kernel_startup.py"
PR_SET_DUMPABLE = 4  # <linux/prctl.h>


@dataclass(frozen=True)
class RunFolder:
    """The files of one notebook run in its work folder: one layout for a pipeline's execute
    phase and for `mlops run`, so both inject the same paths."""

    work_dir: Path

    @property
    def model_output_path(self) -> Path:
        """Where the export cell must write the model (injected as MODEL_OUTPUT_PATH)."""
        return self.work_dir / "output" / "model.joblib"

    @property
    def reference_data_path(self) -> Path:
        """Where a notebook may save its training rows, as CSV (REFERENCE_DATA_PATH)."""
        return self.work_dir / "output" / "reference.csv"

    @property
    def store_uri(self) -> str:
        """The tracking URI the kernel gets: a file store in its own work folder."""
        return (self.work_dir / STORE_DIR).as_uri()

    @property
    def home(self) -> Path:
        """HOME of the kernel: inside the work folder, nothing of the caller's."""
        return self.work_dir / "home"

    @property
    def input_notebook(self) -> Path:
        return self.work_dir / "input.ipynb"

    @property
    def executed_notebook(self) -> Path:
        return self.work_dir / "executed.ipynb"

    @property
    def spec_path(self) -> Path:
        return self.work_dir / "execute.json"

    def injected_parameters(
        self, parameters: Mapping[str, Any], pipeline_id: int
    ) -> dict[str, Any]:
        """Papermill parameters: the ones given (a trigger's, `mlops run -p`), then those every
        notebook gets, which none can replace."""
        return {
            **parameters,
            "MODEL_OUTPUT_PATH": str(self.model_output_path),
            "REFERENCE_DATA_PATH": str(self.reference_data_path),
            "PIPELINE_ID": pipeline_id,
            "MLFLOW_TRACKING_URI": self.store_uri,
        }

    def kernel_variables(
        self, *, run_id: str, pipeline_id: int, cpu_seconds: int
    ) -> dict[str, str]:
        """What the kernel's environment gets besides the allow-list: the local MLflow run
        (mlops_core/run_store.py), the injected paths and ids, its IPython profile."""
        return {
            "MLFLOW_TRACKING_URI": self.store_uri,
            "MLFLOW_RUN_ID": run_id,
            "MLFLOW_ALLOW_FILE_STORE": "true",
            "PIPELINE_ID": str(pipeline_id),
            "MODEL_OUTPUT_PATH": str(self.model_output_path),
            "REFERENCE_DATA_PATH": str(self.reference_data_path),
            "IPYTHONDIR": str(self.home / ".ipython"),
            "MLOPS_KERNEL_CPU_SECONDS": str(cpu_seconds),
        }

    def runner_spec(
        self, *, cwd: Path, parameters: dict[str, Any], cell_timeout: int, events_fd: int
    ) -> dict[str, Any]:
        """What `python -m RUNNER_MODULE SPEC.json` reads (written to `spec_path`)."""
        return {
            "input": str(self.input_notebook),
            "output": str(self.executed_notebook),
            "cwd": str(cwd),
            "parameters": parameters,
            "cell_timeout": cell_timeout,
            "skip_tag": SKIP_TAG,
            "events_fd": events_fd,
        }


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
        # Each cell run so far by its execution count, to place a traceback's `In[N]` frames.
        self.ran: dict[int, RanCell] = {}
        self._streams: dict[str, OutputStream] = {}

    def on_cell_execute(self, cell: NotebookNode, cell_index: int) -> None:
        self.current = cell.metadata.get(INDEX_METADATA_KEY)
        self.current_tag = _cell_label(cell)
        self._started = time.monotonic()
        self.events.emit("cell_start", index=self.current, tag=self.current_tag)

    def on_cell_executed(
        self, cell: NotebookNode, cell_index: int, execute_reply: dict[str, Any]
    ) -> None:
        self.flush_streams()
        content = execute_reply.get("content", {})
        status = content.get("status", "ok")
        count = content.get("execution_count")
        if isinstance(count, int) and self.current is not None:
            self.ran[count] = RanCell(self.current + 1, self.current_tag, cell.source)
        self.events.emit(
            "cell_end",
            index=self.current,
            tag=self.current_tag,
            status=status,
            seconds=round(time.monotonic() - self._started, 3),
        )

    def stream(self, name: str) -> OutputStream:
        if name not in self._streams:
            self._streams[name] = OutputStream(self, name)
        return self._streams[name]

    def flush_streams(self) -> None:
        """Send what the cell printed without a final newline (its end ends the line)."""
        for stream in self._streams.values():
            stream.send_partial()


# A line longer than this is sent in pieces rather than held back whole.
MAX_HELD_CHARACTERS = 65_536
# Where a chunk may be cut: what the log's consumers split lines on (a progress bar's \r too).
_LINE_ENDS = ("\n", "\r")


class OutputStream:
    """The file-like object papermill writes a cell's stdout/stderr to, chunk by chunk.

    The kernel cuts its output into chunks wherever its buffer was flushed, which depends on
    timing: `print("trained", model)` arrived as one chunk on one run and as "trained " and the
    model on another, and each chunk became a log line. Only whole lines are sent; the rest is
    held until the line ends or the cell does.
    """

    def __init__(self, tracker: CellTracker, name: str) -> None:
        self._tracker = tracker
        self._name = name
        self._held = ""

    def write(self, text: str) -> int:
        pending = self._held + text
        cut = max(pending.rfind(end) for end in _LINE_ENDS) + 1
        if len(pending) - cut > MAX_HELD_CHARACTERS:
            cut = len(pending)
        lines, self._held = pending[:cut], pending[cut:]
        if lines.strip("\r"):  # a bare \r (a progress bar going back) ends no line
            self._send(lines)
        return len(text)

    def send_partial(self) -> None:
        held, self._held = self._held, ""
        self._send(held)

    def _send(self, text: str) -> None:
        if text:
            self._tracker.events.emit(
                "output", index=self._tracker.current, stream=self._name, text=text
            )

    def flush(self) -> None:
        """Lines are sent as they end; flushing does not end one."""


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
        return _execute(spec, tracker)
    finally:
        tracker.flush_streams()  # a cell cut short (timeout, dead kernel) ended its line


def _execute(spec: dict[str, Any], tracker: CellTracker) -> dict[str, Any]:
    # Imported here, in the runner's own process: the worker and the CLI import this module for
    # its constants and need not pay for papermill's import.
    import papermill
    from nbclient.exceptions import CellTimeoutError, DeadKernelError
    from papermill.exceptions import PapermillExecutionError

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
        message = f"{exc.ename}: {exc.evalue}"
        failure = cell_failure(
            exc.traceback,
            message,
            tracker.ran,
            cell=None if tracker.current is None else tracker.current + 1,
            tag=tracker.current_tag,
        )
        return {
            "ok": False,
            "kind": "error",
            "index": tracker.current,
            "tag": tracker.current_tag,
            "message": message,
            "failure": failure.as_json(),
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


def install_kernel_startup(ipython_dir: Path) -> None:
    """Give the kernel's IPython profile the startup file that keeps the run's MLflow run id
    (mlops_core/kernel_startup.py); the kernel gets IPYTHONDIR=`ipython_dir`."""
    startup = ipython_dir / "profile_default" / "startup"
    startup.mkdir(parents=True, exist_ok=True)
    module = ipython_dir / "mlops_kernel_startup.py"
    module.write_bytes(KERNEL_STARTUP.read_bytes())
    # Run in a namespace of its own: the notebook's namespace stays as Jupyter's would be.
    (startup / "00-mlops-pipeline-run.py").write_text(
        f"import runpy\nrunpy.run_path({str(module)!r}, run_name='__main__')\ndel runpy\n",
        encoding="utf-8",
    )


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
