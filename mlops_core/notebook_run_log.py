"""What a notebook run says in its log: the runner's events turned into log lines, and the
sentence that names a failed cell.

The notebook runner (mlops_core/notebook_runner.py) reports cell starts, ends and output as
events; the worker's execute phase publishes these lines to the pipeline's log and `mlops run`
prints them, so a local run reads like the pipeline's log of the same notebook.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

from nbformat import NotebookNode

from mlops_core.cell_traceback import CellFailure, failure_lines, user_line
from mlops_core.notebook_contract import skipped_cells_defining
from mlops_core.notebook_requirements import import_error_hint

OUTPUT_STREAMS = frozenset({"stdout", "stderr"})
KERNEL_NOISE = ("Kernel is running over TCP without encryption",)
# Papermill warns for injected names when a notebook has no `parameters` cell: expected here.
RUNNER_NOISE = (
    *KERNEL_NOISE,
    "Passed unknown parameter:",
    "Input notebook does not contain a cell with tag 'parameters'",
)
UNDEFINED_NAME = re.compile(r"NameError: name '([A-Za-z_][A-Za-z0-9_]*)' is not defined")


class LogLine(NamedTuple):
    """One line for the log: its text, stream (system, stdout, stderr) and 0-based cell."""

    text: str
    stream: str
    cell: int | None


def event_line(event: Mapping[str, Any]) -> LogLine | None:
    """The log line of one runner event (None: nothing to show)."""
    index = event.get("index")
    where = f"cell {index + 1}" if index is not None else "injected parameters"
    if event["type"] == "cell_start":
        return LogLine(f"▶ {where} ({event.get('tag')}) started", "system", index)
    if event["type"] == "cell_end":
        status = "finished" if event.get("status") == "ok" else "failed"
        return LogLine(f"■ {where} {status} in {event.get('seconds', 0):.2f} s", "system", index)
    if event["type"] != "output":
        return None
    # The kernel may write to the runner's events pipe too: only output streams pass, so no
    # line can pose as the final status event or as the platform's own lines.
    stream = event.get("stream")
    if stream not in OUTPUT_STREAMS:
        return None
    text = str(event.get("text", ""))
    if "\r" in text:
        text = overwritten_parts_dropped(text)
        if not text.strip():
            return None
    if any(noise in text for noise in KERNEL_NOISE):
        return None
    return LogLine(text.rstrip("\n"), str(stream), index)


def runner_line(line: str) -> LogLine | None:
    """A line the runner itself printed (papermill warnings, kernel start messages)."""
    if any(noise in line for noise in RUNNER_NOISE):
        return None
    return LogLine(line, "stderr", None)


def overwritten_parts_dropped(text: str) -> str:
    """Output as a terminal shows it: what a carriage return overwrote is gone.

    Progress output (tqdm bars, `print(..., end="\\r")` counters) rewrites one line many times;
    logged as is, every rewrite became a line of its own (and a blank one before each bar).
    """
    lines = (line.rstrip("\r").rsplit("\r", 1)[-1] for line in text.split("\n"))
    return "\n".join(lines)


def failed_cell(result: Mapping[str, Any]) -> str:
    """`cell 3 (mlops:training)`: where a failed run stopped."""
    index = result.get("index")
    tag = result.get("tag")
    return f"cell {index + 1} ({tag})" if index is not None else "the injected parameters cell"


def describe_failure(
    result: Mapping[str, Any],
    *,
    cell_timeout_seconds: int,
    notebook: Callable[[], NotebookNode | None],
    installed_version: Callable[[str], str | None],
    limit_exceeded: Callable[[str], str | None] = lambda _message: None,
    dead_kernel_note: str = "",
) -> str:
    """The error of a failed run: which cell, what happened, and how to fix it when known.

    `notebook` reads the notebook as pushed (only for a NameError); `installed_version` names
    the version of a package the kernel has; `limit_exceeded` names a sandbox limit an error
    message shows was hit.
    """
    where = failed_cell(result)
    kind = result.get("kind")
    if kind == "timeout":
        return f"{where} timed out after {cell_timeout_seconds} s (CELL_TIMEOUT_SECONDS)"
    if kind == "dead_kernel":
        return f"the kernel died while running {where} (killed, or out of memory?)" + (
            dead_kernel_note
        )
    if kind != "error":
        return f"running the notebook failed at {where}: {result.get('message')}"
    raised = str(result.get("message", ""))
    limit = limit_exceeded(raised)
    if limit:
        return f"{limit}: {where} raised {raised}"
    hint = import_error_hint(raised, installed_version)
    return (
        f"{where} raised {raised}"
        + skipped_definition_hint(notebook, raised)
        + (f" ({hint})" if hint else "")
    )


def report_failure(result: Mapping[str, Any], message: str, log: Callable[[str], None]) -> str:
    """Log where a raising cell failed, once (the user's frames with their source, the
    library frames, the exception), and return `message` with the user's line added."""
    failure = CellFailure.from_json(result.get("failure"))
    if failure is None:
        return message
    for line in failure_lines(failure):
        log(line)
    located = user_line(failure)
    return f"{message}\n{located}" if located else message


def skipped_definition_hint(notebook: Callable[[], NotebookNode | None], message: str) -> str:
    """For a NameError: the untagged (skipped) cells that define the missing name, if any."""
    missing = UNDEFINED_NAME.match(message)
    if missing is None:
        return ""
    book = notebook()
    if book is None:
        return ""  # the hint is a courtesy; the error itself is already named
    name = missing.group(1)
    cells = skipped_cells_defining(book, name)
    if not cells:
        return ""
    listed = ", ".join(str(i + 1) for i in cells)
    plural = "s" if len(cells) > 1 else ""
    return (
        f" ({name!r} is defined in untagged cell{plural} {listed}, which the pipeline does not "
        "run: tag it, e.g. mlops:data, or move the definition into a tagged cell)"
    )
