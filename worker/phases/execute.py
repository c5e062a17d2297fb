"""execute: run the tagged cells with papermill in a real kernel, streaming output to the log.

The working directory is the notebook's own folder inside the checkout, as when Jupyter opens
it: `pd.read_csv("data.csv")` finds the file committed beside the notebook both on a laptop and
in the pipeline (for a notebook at the repository root this is the checkout itself).

Papermill runs in a child process (worker/sandbox/notebook_child.py) rather than in the
Celery process, because:
- cancel and the pipeline deadline must stop a cell stuck in C code or `time.sleep`: killing
  a process tree is immediate and leaves the worker clean, while stopping papermill's event
  loop from another thread is not;
- the child starts from the kernel's allow-listed environment, so no secret is ever in the
  process tree of the notebook;
- memory a notebook run leaks (or a kernel killed for memory) dies with the child.
It costs ~0.5 s of interpreter start per pipeline.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import selectors
import subprocess
import sys
from pathlib import Path
from typing import Any

import nbformat

from mlops_core.notebook_contract import (
    SKIP_TAG,
    prepare_for_execution,
    skipped_cells_defining,
    strip_execution_marks,
)
from worker.child_processes import kill_tree
from worker.kernel_env import kernel_environment
from worker.phases.context import PhaseContext, PhaseFailed, PipelineCancelled

UNDEFINED_NAME = re.compile(r"NameError: name '([A-Za-z_][A-Za-z0-9_]*)' is not defined")
# Copied into the kernel's IPython profile (the kernel does not import the platform).
KERNEL_STARTUP = Path(__file__).resolve().parents[1] / "sandbox" / "kernel_startup.py"
KERNEL_NOISE = ("Kernel is running over TCP without encryption",)
# Papermill warns for injected names when a notebook has no `parameters` cell: expected here.
RUNNER_NOISE = (
    *KERNEL_NOISE,
    "Passed unknown parameter:",
    "Input notebook does not contain a cell with tag 'parameters'",
)


def run(ctx: PhaseContext) -> None:
    """Execute the notebook; on failure say which cell and how, with the error's last lines."""
    assert ctx.notebook_file is not None and ctx.contract is not None
    assert ctx.mlflow_run_id is not None
    out_dir = ctx.model_output_path.parent
    out_dir.mkdir(parents=True, exist_ok=True)
    prepared = prepare_for_execution(nbformat.read(ctx.notebook_file, as_version=4))
    input_path = ctx.work_dir / "input.ipynb"
    nbformat.write(prepared, input_path)
    output_path = ctx.work_dir / "executed.ipynb"
    spec_path = ctx.work_dir / "execute.json"
    read_fd, write_fd = os.pipe()
    spec = {
        "input": str(input_path),
        "output": str(output_path),
        "cwd": str(ctx.notebook_file.parent),
        "parameters": injected_parameters(ctx),
        "cell_timeout": ctx.settings.cell_timeout_seconds,
        "skip_tag": SKIP_TAG,
        "events_fd": write_fd,
        "parent_pid": os.getpid(),
    }
    spec_path.write_text(json.dumps(spec))
    env = sandbox_environment(ctx)
    install_kernel_startup(Path(env["IPYTHONDIR"]))
    proc = subprocess.Popen(
        [sys.executable, "-m", "worker.sandbox.notebook_child", str(spec_path)],
        env=env,
        cwd=ctx.notebook_file.parent,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        pass_fds=(write_fd,),
        start_new_session=True,
    )
    os.close(write_fd)
    ctx.log(f"kernel starting (cell timeout {ctx.settings.cell_timeout_seconds} s)")
    try:
        result = _pump(ctx, proc, read_fd)
    finally:
        if proc.poll() is None:
            kill_tree(proc.pid)
        proc.wait()
        os.close(read_fd)
    if output_path.exists():
        executed = strip_execution_marks(nbformat.read(output_path, as_version=4))
        nbformat.write(executed, output_path)
        ctx.executed_notebook = output_path
    if result is None:
        raise PhaseFailed(f"the notebook runner stopped unexpectedly (exit code {proc.returncode})")
    if not result.get("ok"):
        raise PhaseFailed(describe_failure(ctx, result))


def injected_parameters(ctx: PhaseContext) -> dict[str, Any]:
    """Papermill parameters every notebook gets."""
    return {
        "MODEL_OUTPUT_PATH": str(ctx.model_output_path),
        "PIPELINE_ID": ctx.pipeline_id,
        "MLFLOW_TRACKING_URI": ctx.settings.mlflow_tracking_uri,
    }


def install_kernel_startup(ipython_dir: Path) -> None:
    """Give the kernel's IPython profile the startup file that keeps the pipeline's MLflow run."""
    startup = ipython_dir / "profile_default" / "startup"
    startup.mkdir(parents=True, exist_ok=True)
    module = ipython_dir / "mlops_kernel_startup.py"
    module.write_bytes(KERNEL_STARTUP.read_bytes())
    # Run in a namespace of its own: the notebook's namespace stays as Jupyter's would be.
    (startup / "00-mlops-pipeline-run.py").write_text(
        f"import runpy\nrunpy.run_path({str(module)!r}, run_name='__main__')\ndel runpy\n",
        encoding="utf-8",
    )


def sandbox_environment(ctx: PhaseContext) -> dict[str, str]:
    """The kernel's environment: allow-listed, plus the pipeline's MLflow run and ids."""
    home = ctx.work_dir / "home"
    home.mkdir(parents=True, exist_ok=True)
    return kernel_environment(
        ctx.settings,
        home=home,
        extra={
            "MLFLOW_TRACKING_URI": ctx.settings.mlflow_tracking_uri,
            "MLFLOW_RUN_ID": ctx.mlflow_run_id or "",
            "PIPELINE_ID": str(ctx.pipeline_id),
            "MODEL_OUTPUT_PATH": str(ctx.model_output_path),
            "IPYTHONDIR": str(home / ".ipython"),
        },
    )


def _pump(ctx: PhaseContext, proc: subprocess.Popen[bytes], events_fd: int) -> dict | None:
    """Publish the child's events as they come; kill it on cancel or when time is up."""
    assert proc.stdout is not None
    selector = selectors.DefaultSelector()
    selector.register(events_fd, selectors.EVENT_READ, "events")
    selector.register(proc.stdout.fileno(), selectors.EVENT_READ, "stdio")
    buffers = {"events": b"", "stdio": b""}
    result: dict[str, Any] | None = None
    open_streams = 2
    while open_streams:
        if ctx.cancelled:
            kill_tree(proc.pid)
            raise PipelineCancelled
        if ctx.remaining() <= 0:
            kill_tree(proc.pid)
            raise PhaseFailed(
                "the pipeline ran out of time "
                f"(PIPELINE_TIMEOUT_SECONDS={ctx.settings.pipeline_timeout_seconds})"
            )
        for key, _ in selector.select(timeout=0.2):
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
                    _log_stdio(ctx, raw.decode("utf-8", "replace"))
                    continue
                event = json.loads(raw)
                if event["type"] == "result":
                    result = event
                else:
                    _publish(ctx, event)
    selector.close()
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=10)
    return result


def _publish(ctx: PhaseContext, event: dict[str, Any]) -> None:
    index = event.get("index")
    where = f"cell {index + 1}" if index is not None else "injected parameters"
    if event["type"] == "cell_start":
        ctx.log(f"▶ {where} ({event.get('tag')}) started", cell=index)
    elif event["type"] == "cell_end":
        status = "finished" if event.get("status") == "ok" else "failed"
        ctx.log(f"■ {where} {status} in {event.get('seconds', 0):.2f} s", cell=index)
    elif event["type"] == "output":
        text = event.get("text", "")
        if "\r" in text:
            text = overwritten_parts_dropped(text)
            if not text.strip():
                return
        if not any(noise in text for noise in KERNEL_NOISE):
            ctx.log(text.rstrip("\n"), stream=event.get("stream", "stdout"), cell=index)


def overwritten_parts_dropped(text: str) -> str:
    """Output as a terminal shows it: what a carriage return overwrote is gone.

    Progress output (tqdm bars, `print(..., end="\\r")` counters) rewrites one line many times;
    logged as is, every rewrite became a line of its own (and a blank one before each bar).
    """
    lines = (line.rstrip("\r").rsplit("\r", 1)[-1] for line in text.split("\n"))
    return "\n".join(lines)


def _log_stdio(ctx: PhaseContext, line: str) -> None:
    """The runner's own stdout/stderr (papermill warnings, kernel start messages)."""
    if not any(noise in line for noise in RUNNER_NOISE):
        ctx.log(line, stream="stderr")


def _skipped_definition_hint(ctx: PhaseContext, message: str) -> str:
    """For a NameError: the untagged (skipped) cells that define the missing name, if any."""
    missing = UNDEFINED_NAME.match(message)
    if missing is None or ctx.notebook_file is None:
        return ""
    name = missing.group(1)
    try:
        notebook = nbformat.read(ctx.notebook_file, as_version=4)
    except Exception:  # the hint is a courtesy; the error itself is already named
        return ""
    cells = skipped_cells_defining(notebook, name)
    if not cells:
        return ""
    listed = ", ".join(str(i + 1) for i in cells)
    plural = "s" if len(cells) > 1 else ""
    return (
        f" ({name!r} is defined in untagged cell{plural} {listed}, which the pipeline does not "
        "run: tag it, e.g. mlops:data, or move the definition into a tagged cell)"
    )


def describe_failure(ctx: PhaseContext, result: dict[str, Any]) -> str:
    """The error shown for a failed run: which cell, what happened, the error's last lines."""
    index = result.get("index")
    tag = result.get("tag")
    where = f"cell {index + 1} ({tag})" if index is not None else "the injected parameters cell"
    kind = result.get("kind")
    if kind == "timeout":
        message = (
            f"{where} timed out after {ctx.settings.cell_timeout_seconds} s (CELL_TIMEOUT_SECONDS)"
        )
    elif kind == "dead_kernel":
        message = f"the kernel died while running {where} (killed, or out of memory?)"
    elif kind == "error":
        message = f"{where} raised {result.get('message')}" + _skipped_definition_hint(
            ctx, str(result.get("message", ""))
        )
    else:
        message = f"running the notebook failed at {where}: {result.get('message')}"
    tail = result.get("traceback") or []
    for line in tail:
        ctx.log(line, stream="error", cell=index)
    return message + ("\n" + "\n".join(tail[-6:]) if tail else "")
