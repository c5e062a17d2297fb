"""execute: run the tagged cells with papermill in a real kernel, streaming output to the log.

The working directory is the notebook's own folder inside the checkout, as when Jupyter opens
it: `pd.read_csv("data.csv")` finds the file committed beside the notebook both on a laptop and
in the pipeline (for a notebook at the repository root this is the checkout itself).

Papermill runs in a child process (mlops_core/notebook_runner.py, started and relayed by
mlops_core/runner_process.py as `mlops run` starts it) rather than in the Celery process,
because:
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

import os
import sys
from pathlib import Path
from typing import Any

import nbformat

from mlops_core import notebook_run_log, sandbox
from mlops_core.cell_traceback import CellFailure
from mlops_core.kernel_env import kernel_environment
from mlops_core.notebook_contract import (
    prepare_for_execution,
    read_notebook,
    strip_execution_marks,
)
from mlops_core.notebook_requirements import REQUIREMENTS_PATH_VARIABLE
from mlops_core.notebook_runner import RUNNER_MODULE, RunFolder, install_kernel_startup
from mlops_core.runner_process import read_executed, run_notebook
from worker import local_tracking, metrics, requirements_install
from worker.phases.context import PhaseContext, PhaseFailed, PipelineCancelled


def prepare(ctx: PhaseContext) -> None:
    """Make the work folder ready for the sandbox: local MLflow run, kernel profile, owner
    (the packages of a requirements.txt beside the notebook are the environment phase's).

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


def run(ctx: PhaseContext) -> None:
    """Execute the notebook; on failure say which cell and how, with the error's last lines."""
    assert ctx.notebook_file is not None and ctx.contract is not None
    folder = RunFolder(ctx.work_dir)
    prepared = prepare_for_execution(read_notebook(ctx.notebook_file.read_bytes()))
    nbformat.write(prepared, folder.input_notebook)  # the sandbox reads it, never writes it
    ended = run_notebook(
        folder,
        sandboxed(ctx, RUNNER_MODULE, str(folder.spec_path)),
        cwd=ctx.notebook_file.parent,
        env=sandbox_environment(ctx),
        parameters=injected_parameters(ctx),
        cell_timeout=ctx.settings.cell_timeout_seconds,
        log=lambda line: ctx.log(line.text, stream=line.stream, cell=line.cell),
        check=lambda: _stop_when_due(ctx),
    )
    executed = read_executed(folder.executed_notebook)
    if executed is not None:
        nbformat.write(strip_execution_marks(executed), folder.executed_notebook)
        ctx.executed_notebook = folder.executed_notebook
    result = ended.result
    if result is None:
        raise PhaseFailed(
            f"the notebook runner stopped unexpectedly (exit code {ended.returncode})"
        )
    metrics.record_kernel_peak(result.get("kernel_peak_rss_bytes"))
    if not result.get("ok"):
        raise PhaseFailed(describe_failure(ctx, result))


def _stop_when_due(ctx: PhaseContext) -> None:
    """Stop the run on cancel or when the pipeline is out of time (the runner is killed)."""
    if ctx.cancelled:
        raise PipelineCancelled
    if ctx.remaining() <= 0:
        raise PhaseFailed(
            "the pipeline ran out of time "
            f"(PIPELINE_TIMEOUT_SECONDS={ctx.settings.pipeline_timeout_seconds})"
        )


def sandboxed(ctx: PhaseContext, module: str, *args: str) -> list[str]:
    """The command line that runs a child program (the notebook runner, the model logger)
    inside the sandbox.

    `-I` keeps the checkout (the working directory) off the child's own import path: a
    `json.py` committed beside the notebook must not run inside the platform's runner.
    """
    cwd = ctx.notebook_file.parent if ctx.notebook_file else ctx.work_dir
    return sandbox.wrap(
        ctx.settings,
        [sys.executable, "-I", "-m", module, *args],
        work_dir=ctx.work_dir,
        cwd=cwd,
        read_only=[ctx.environment] if ctx.environment else [],
    )


def injected_parameters(ctx: PhaseContext) -> dict[str, Any]:
    """Papermill parameters: the trigger's (validated by the API), then those every notebook
    gets, which no trigger can replace."""
    return RunFolder(ctx.work_dir).injected_parameters(ctx.parameters, ctx.pipeline_id)


def kernel_home(ctx: PhaseContext) -> Path:
    """HOME of the sandboxed processes: inside the work folder, nothing of the worker's."""
    return RunFolder(ctx.work_dir).home


def sandbox_environment(ctx: PhaseContext) -> dict[str, str]:
    """The kernel's environment: allow-listed, plus the local MLflow run and ids."""
    home = kernel_home(ctx)
    home.mkdir(parents=True, exist_ok=True)
    requirements = requirements_install.import_paths(ctx.environment)
    return kernel_environment(
        ctx.settings,
        home=home,
        extra={
            **RunFolder(ctx.work_dir).kernel_variables(
                run_id=ctx.local_run_id or "",
                pipeline_id=ctx.pipeline_id,
                cpu_seconds=ctx.settings.kernel_cpu_seconds,
            ),
            # Appended to sys.path by the kernel's startup file and by the model logger.
            **({REQUIREMENTS_PATH_VARIABLE: os.pathsep.join(requirements)} if requirements else {}),
            # The worker's TMPDIR is not in the sandbox, whose /tmp is its own.
            **({"TMPDIR": "/tmp"} if ctx.settings.kernel_sandbox == "on" else {}),
        },
    )


def describe_failure(ctx: PhaseContext, result: dict[str, Any]) -> str:
    """The error shown for a failed run: which cell, what happened, the error's last lines."""
    settings = ctx.settings
    note = ""
    if settings.kernel_sandbox == "on":
        note = (
            " — the sandbox kills a kernel past its limits: KERNEL_MEMORY_LIMIT="
            f"{settings.kernel_memory_limit.human_readable()}, "
            f"KERNEL_CPU_SECONDS={settings.kernel_cpu_seconds}"
        )
    message = notebook_run_log.describe_failure(
        result,
        cell_timeout_seconds=settings.cell_timeout_seconds,
        # The checkout, writable by the sandbox: read as a file it may have replaced.
        notebook=lambda: read_executed(ctx.notebook_file) if ctx.notebook_file else None,
        installed_version=lambda package: requirements_install.installed_version(
            package, ctx.environment
        ),
        limit_exceeded=lambda raised: sandbox.limit_exceeded(settings, raised),
        dead_kernel_note=note,
    )
    if result.get("kind") == "error":
        offline = sandbox.no_network_hint(settings, str(result.get("message", "")))
        message += f" ({offline})" if offline else ""
    failure = CellFailure.from_json(result.get("failure"))
    if failure is not None:
        # Kept beside the error, so the pipeline page shows the user's line outside the log.
        ctx.update_pipeline(failure=failure.as_json())
    return notebook_run_log.report_failure(
        result, message, lambda line: ctx.log(line, stream="error", cell=result.get("index"))
    )
