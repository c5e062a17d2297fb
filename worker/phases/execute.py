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
It costs ~0.5 s of interpreter start per pipeline. The child runs inside the kernel sandbox
(mlops_core/sandbox.py), and its MLflow calls go to a store in the work folder that the worker
copies into the pipeline's run afterwards (worker/local_tracking.py).
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

from mlops_core import sandbox
from mlops_core.notebook_contract import (
    SKIP_TAG,
    prepare_for_execution,
    skipped_cells_defining,
    strip_execution_marks,
)
from mlops_core.notebook_requirements import REQUIREMENTS_PATH_VARIABLE, import_error_hint
from worker import local_tracking, metrics, requirements_install
from worker.child_processes import kill_tree
from worker.kernel_env import kernel_environment
from worker.phases.context import PhaseContext, PhaseFailed, PipelineCancelled

UNDEFINED_NAME = re.compile(r"NameError: name '([A-Za-z_][A-Za-z0-9_]*)' is not defined")
# Copied into the kernel's IPython profile (the kernel does not import the platform).
KERNEL_STARTUP = Path(__file__).resolve().parents[1] / "sandbox" / "kernel_startup.py"
OUTPUT_STREAMS = frozenset({"stdout", "stderr"})
KERNEL_NOISE = ("Kernel is running over TCP without encryption",)
# Papermill warns for injected names when a notebook has no `parameters` cell: expected here.
RUNNER_NOISE = (
    *KERNEL_NOISE,
    "Passed unknown parameter:",
    "Input notebook does not contain a cell with tag 'parameters'",
)


def prepare(ctx: PhaseContext) -> None:
    """Make the work folder ready for the sandbox: local MLflow run, kernel profile, owner,
    and the packages of a requirements.txt beside the notebook.

    Runs before the kernel and the model-logging child start; refuses (PhaseFailed) when the
    sandbox is required but cannot run here.
    """
    try:
        sandbox.ensure_available(ctx.settings)
    except sandbox.SandboxUnavailable as exc:
        raise PhaseFailed(f"notebooks are not run: {exc}") from None
    ctx.local_run_id = local_tracking.create_local_run(ctx)
    ctx.model_output_path.parent.mkdir(parents=True, exist_ok=True)
    install_kernel_startup(kernel_home(ctx) / ".ipython")
    sandbox.prepare_work_dir(ctx.settings, ctx.work_dir)
    requirements_install.install(ctx, kernel_home(ctx))


def run(ctx: PhaseContext) -> None:
    """Execute the notebook; on failure say which cell and how, with the error's last lines."""
    assert ctx.notebook_file is not None and ctx.contract is not None
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
    }
    spec_path.write_text(json.dumps(spec))  # the sandbox reads these two, never writes them
    proc = subprocess.Popen(
        sandboxed(ctx, "worker.sandbox.notebook_child", str(spec_path)),
        env=sandbox_environment(ctx),
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
    executed = read_executed(output_path)
    if executed is not None:
        nbformat.write(strip_execution_marks(executed), output_path)
        ctx.executed_notebook = output_path
    if result is None:
        raise PhaseFailed(f"the notebook runner stopped unexpectedly (exit code {proc.returncode})")
    metrics.record_kernel_peak(result.get("kernel_peak_rss_bytes"))
    if not result.get("ok"):
        raise PhaseFailed(describe_failure(ctx, result))


def sandboxed(ctx: PhaseContext, module: str, *args: str) -> list[str]:
    """The command line that runs one of worker/sandbox's programs inside the sandbox.

    `-I` keeps the checkout (the working directory) off the child's own import path: a
    `json.py` committed beside the notebook must not run inside the platform's runner.
    """
    cwd = ctx.notebook_file.parent if ctx.notebook_file else ctx.work_dir
    return sandbox.wrap(
        ctx.settings,
        [sys.executable, "-I", "-m", module, *args],
        work_dir=ctx.work_dir,
        cwd=cwd,
    )


def read_executed(path: Path) -> nbformat.NotebookNode | None:
    """The executed notebook the sandbox wrote, if it is a plain file holding a notebook."""
    stream = sandbox.open_written(path)
    if stream is None:
        return None
    with stream:
        try:
            return nbformat.reads(stream.read().decode("utf-8"), as_version=4)
        except Exception:  # the sandbox may have written anything there
            return None


def injected_parameters(ctx: PhaseContext) -> dict[str, Any]:
    """Papermill parameters: the trigger's (validated by the API), then those every notebook
    gets, which no trigger can replace."""
    return {
        **ctx.parameters,
        "MODEL_OUTPUT_PATH": str(ctx.model_output_path),
        "REFERENCE_DATA_PATH": str(ctx.reference_data_path),
        "PIPELINE_ID": ctx.pipeline_id,
        "MLFLOW_TRACKING_URI": local_tracking.store_uri(ctx.work_dir),
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


def kernel_home(ctx: PhaseContext) -> Path:
    """HOME of the sandboxed processes: inside the work folder, nothing of the worker's."""
    return ctx.work_dir / "home"


def sandbox_environment(ctx: PhaseContext) -> dict[str, str]:
    """The kernel's environment: allow-listed, plus the local MLflow run and ids."""
    home = kernel_home(ctx)
    home.mkdir(parents=True, exist_ok=True)
    requirements = requirements_install.import_paths(ctx.work_dir)
    return kernel_environment(
        ctx.settings,
        home=home,
        extra={
            "MLFLOW_TRACKING_URI": local_tracking.store_uri(ctx.work_dir),
            "MLFLOW_RUN_ID": ctx.local_run_id or "",
            "MLFLOW_ALLOW_FILE_STORE": "true",
            "PIPELINE_ID": str(ctx.pipeline_id),
            "MODEL_OUTPUT_PATH": str(ctx.model_output_path),
            "REFERENCE_DATA_PATH": str(ctx.reference_data_path),
            "IPYTHONDIR": str(home / ".ipython"),
            "MLOPS_KERNEL_CPU_SECONDS": str(ctx.settings.kernel_cpu_seconds),
            # Appended to sys.path by the kernel's startup file and by the model logger.
            **({REQUIREMENTS_PATH_VARIABLE: os.pathsep.join(requirements)} if requirements else {}),
            # The worker's TMPDIR is not in the sandbox, whose /tmp is its own.
            **({"TMPDIR": "/tmp"} if ctx.settings.kernel_sandbox == "on" else {}),
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
        # The kernel may write to the runner's events pipe too: only output streams pass, so
        # no line can pose as the final status event or as the platform's own lines.
        stream = event.get("stream")
        if stream not in OUTPUT_STREAMS:
            return
        text = str(event.get("text", ""))
        if "\r" in text:
            text = overwritten_parts_dropped(text)
            if not text.strip():
                return
        if not any(noise in text for noise in KERNEL_NOISE):
            ctx.log(text.rstrip("\n"), stream=stream, cell=index)


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
    notebook = read_executed(ctx.notebook_file)  # the checkout, writable by the sandbox
    if notebook is None:
        return ""  # the hint is a courtesy; the error itself is already named
    cells = skipped_cells_defining(notebook, name)
    if not cells:
        return ""
    listed = ", ".join(str(i + 1) for i in cells)
    plural = "s" if len(cells) > 1 else ""
    return (
        f" ({name!r} is defined in untagged cell{plural} {listed}, which the pipeline does not "
        "run: tag it, e.g. mlops:data, or move the definition into a tagged cell)"
    )


def _import_hint(ctx: PhaseContext, message: str) -> str:
    """For an ImportError: the package to declare in requirements.txt, or why it lacks a name."""
    hint = import_error_hint(
        message, lambda package: requirements_install.installed_version(package, ctx.work_dir)
    )
    return f" ({hint})" if hint else ""


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
        if ctx.settings.kernel_sandbox == "on":
            message += (
                " — the sandbox kills a kernel past its limits: KERNEL_MEMORY_LIMIT="
                f"{ctx.settings.kernel_memory_limit.human_readable()}, "
                f"KERNEL_CPU_SECONDS={ctx.settings.kernel_cpu_seconds}"
            )
    elif kind == "error":
        raised = str(result.get("message", ""))
        limit = sandbox.limit_exceeded(ctx.settings, raised)
        message = (
            f"{limit}: {where} raised {raised}"
            if limit
            else f"{where} raised {raised}"
            + _skipped_definition_hint(ctx, raised)
            + _import_hint(ctx, raised)
        )
    else:
        message = f"running the notebook failed at {where}: {result.get('message')}"
    tail = result.get("traceback") or []
    for line in tail:
        ctx.log(line, stream="error", cell=index)
    return message + ("\n" + "\n".join(tail[-6:]) if tail else "")
