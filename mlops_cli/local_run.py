"""`mlops run NOTEBOOK [-p NAME VALUE]...`: a notebook run here, as a pipeline would run it.

No git, webhook or server: the notebook on disk is checked with the validate phase's contract
check, its tagged cells run in the platform's notebook runner (mlops_core/notebook_runner.py:
the same cell selection, the same papermill parameter injection, the same work-folder layout and
kernel environment allow-list, the same log lines), its `mlflow.log_*` calls land in a file store
of the run's own folder (mlops_core/run_store.py), and its metrics are judged by the deploy gate
(mlops_core/deploy_gate.py). The model goes where the export cell writes it: MODEL_OUTPUT_PATH,
`OUTPUT/output/model.joblib`. `--mlflow URI` then copies the run into a run on that server, as
the worker copies a pipeline's.

Unlike a pipeline, the kernel runs unsandboxed, as you, on this machine: it is your notebook,
and the sandbox needs root. It uses this environment's packages (a requirements.txt beside the
notebook is not installed), and a comparison with the version served now (which only the
platform knows) is not made.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import json
import os
import selectors
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Final

import click
import nbformat
from pydantic import ValidationError

from mlops_cli.bad_input import BadInput
from mlops_cli.exit_codes import (
    EXIT_API_ERROR,
    EXIT_FAILED,
    EXIT_GATE_FAILED,
    EXIT_INTERRUPTED,
    EXIT_NOT_FOUND,
    EXIT_SUCCESS,
)
from mlops_cli.invocation import invocation, json_option
from mlops_cli.log_follow import Event, make_printer
from mlops_cli.parameters import collect, parameter_options
from mlops_core import notebook_run_log, run_store
from mlops_core.deploy_gate import apply_floor, describe_gates, evaluate_gate
from mlops_core.kernel_env import kernel_environment
from mlops_core.log_events import LogEvent
from mlops_core.notebook_contract import (
    ContractViolation,
    NotebookContract,
    check_notebook,
    prepare_for_execution,
    read_notebook,
    strip_execution_marks,
)
from mlops_core.notebook_requirements import REQUIREMENTS_FILE, installed_provider
from mlops_core.notebook_runner import RUNNER_MODULE, RunFolder, install_kernel_startup
from mlops_core.run_parameters import overridden_by_later_cells, validate_parameters
from mlops_core.settings import Settings

# A local run has no pipeline: the notebook gets PIPELINE_ID 0 (log events carry it too).
LOCAL_PIPELINE_ID: Final = 0
# Marks a folder as `mlops run`'s output, which a later run may empty and reuse.
MARKER: Final = ".mlops-run"
DEFAULT_OUTPUT: Final = Path(".mlops-run")
# MLflow's client retries an unreachable server for minutes by default.
MLFLOW_RETRIES: Final = "2"


class RunFailed(Exception):
    """The run stopped; `exit_code` says how (mlops_cli/exit_codes.py), the log says why."""

    def __init__(self, message: str, exit_code: int = EXIT_FAILED) -> None:
        super().__init__(message)
        self.exit_code = exit_code


@dataclass
class LocalRun:
    """One local run: its notebook, folder, settings, and the log it prints."""

    notebook: Path
    folder: RunFolder
    parameters: dict[str, Any]
    settings: Settings
    print_event: Callable[[Event], None]
    mlflow_uri: str | None = None
    phase: str | None = None
    seq: int = 0
    contract: NotebookContract | None = None
    local_run_id: str | None = None
    mlflow_run_id: str | None = None
    metrics: dict[str, float] = field(default_factory=dict)

    def log(
        self, text: str, *, stream: str = "system", cell: int | None = None, **extra: Any
    ) -> None:
        """Print lines as the pipeline's log shows them (`mlops logs`), or as its JSON events."""
        for line in text.splitlines() or [""]:
            self.seq += 1
            event = LogEvent(
                seq=self.seq,
                ts=time.time(),
                pipeline_id=LOCAL_PIPELINE_ID,
                phase=self.phase,
                cell=cell,
                stream=stream,
                text=line,
                status=extra.pop("status", None),
            ).model_dump()
            self.print_event({**event, **extra})


def prepare_output(path: Path) -> RunFolder:
    """The run's folder, emptied: only a folder an earlier `mlops run` made, or a new one."""
    if path.exists():
        if not path.is_dir():
            raise BadInput(f"--output {path}: not a folder")
        if any(path.iterdir()) and not (path / MARKER).exists():
            raise BadInput(
                f"--output {path}: the folder is not empty and was not made by `mlops run` "
                "(its contents would be deleted): choose another --output"
            )
        shutil.rmtree(path)
    path.mkdir(parents=True)
    (path / MARKER).write_text("made by `mlops run`; emptied by the next run\n")
    return RunFolder(path.resolve())


def read_settings(min_accuracy: float | None) -> Settings:
    """The platform's settings from this environment (no .env: this is not the platform)."""
    try:
        settings = Settings(_env_file=None)  # type: ignore[call-arg]
    except ValidationError as exc:
        raise BadInput(f"a platform setting in the environment is invalid: {exc}") from None
    if min_accuracy is not None:
        settings = settings.model_copy(update={"min_accuracy_threshold": min_accuracy})
    return settings


# --- the phases -----------------------------------------------------------------------------


def validate(run: LocalRun) -> NotebookContract:
    """The validate phase's checks: the contract, the parameters, the operator's floor."""
    try:
        notebook = read_notebook(run.notebook.read_bytes())
        contract = check_notebook(notebook, default_threshold=run.settings.min_accuracy_threshold)
    except ContractViolation as exc:
        for violation in exc.violations:
            run.log(f"contract: {violation}", stream="error")
        raise RunFailed(str(exc)) from None
    if run.parameters:
        problems = overridden_by_later_cells(notebook, run.parameters)
        for problem in problems:
            run.log(problem, stream="error")
        if problems:
            raise RunFailed("; ".join(problems))
        shown = ", ".join(f"{name}={value!r}" for name, value in run.parameters.items())
        run.log(f"parameters given: {shown}")
    floor = run.settings.accuracy_floor
    if floor is not None:
        gate, note = apply_floor(contract.gate, floor)
        if note:
            run.log(note)
            contract = replace(contract, gate=gate)
    run.log(
        f"model {contract.model_name} version {contract.version}; "
        f"{len(contract.run_cells)} tagged cells will run; "
        f"gate: {describe_gates(contract.gate, floor)}"
    )
    return contract


def execute(run: LocalRun) -> None:
    """Run the tagged cells in the platform's notebook runner, printing its log live."""
    assert run.contract is not None
    folder = run.folder
    run.local_run_id = run_store.create_local_run(
        folder.work_dir,
        run.contract.experiment_name or run.contract.model_name,
        f"local-{run.contract.model_name}",
    )
    folder.model_output_path.parent.mkdir(parents=True, exist_ok=True)
    install_kernel_startup(folder.home / ".ipython")
    requirements = run.notebook.parent / REQUIREMENTS_FILE
    if requirements.is_file():
        run.log(
            f"{requirements} is not installed by `mlops run`: the kernel has this environment's "
            f"packages (`pip install -r {requirements}` here, if they are missing)"
        )
    prepared = prepare_for_execution(nbformat.read(run.notebook, as_version=4))
    nbformat.write(prepared, folder.input_notebook)
    read_fd, write_fd = os.pipe()
    spec = folder.runner_spec(
        cwd=run.notebook.parent,
        parameters=folder.injected_parameters(run.parameters, LOCAL_PIPELINE_ID),
        cell_timeout=run.settings.cell_timeout_seconds,
        events_fd=write_fd,
    )
    folder.spec_path.write_text(json.dumps(spec))
    env = kernel_environment(
        run.settings,
        home=folder.home,
        extra=folder.kernel_variables(
            run_id=run.local_run_id,
            pipeline_id=LOCAL_PIPELINE_ID,
            cpu_seconds=run.settings.kernel_cpu_seconds,
        ),
    )
    proc = subprocess.Popen(
        [sys.executable, "-I", "-m", RUNNER_MODULE, str(folder.spec_path)],
        env=env,
        cwd=run.notebook.parent,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        pass_fds=(write_fd,),
        start_new_session=True,
    )
    os.close(write_fd)
    run.log(f"kernel starting (cell timeout {run.settings.cell_timeout_seconds} s)")
    try:
        result = _pump(run, proc, read_fd)
    finally:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        os.close(read_fd)
    if folder.executed_notebook.is_file():
        executed = nbformat.read(folder.executed_notebook, as_version=4)
        nbformat.write(strip_execution_marks(executed), folder.executed_notebook)
    if result is None:
        raise RunFailed(f"the notebook runner stopped unexpectedly (exit code {proc.returncode})")
    if not result.get("ok"):
        raise RunFailed(_describe_failure(run, result))
    if not folder.model_output_path.is_file():
        raise RunFailed(
            "the notebook did not write a model to MODEL_OUTPUT_PATH "
            "(export it with joblib.dump(model, MODEL_OUTPUT_PATH))"
        )


def _pump(run: LocalRun, proc: subprocess.Popen[bytes], events_fd: int) -> dict[str, Any] | None:
    """Print the runner's events and its own output as they come; return its result event."""
    assert proc.stdout is not None
    selector = selectors.DefaultSelector()
    selector.register(events_fd, selectors.EVENT_READ, "events")
    selector.register(proc.stdout.fileno(), selectors.EVENT_READ, "stdio")
    buffers = {"events": b"", "stdio": b""}
    result: dict[str, Any] | None = None
    open_streams = 2
    while open_streams:
        for key, _ in selector.select(timeout=0.5):
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
                    run.log(line.text, stream=line.stream, cell=line.cell)
    selector.close()
    return result


def _describe_failure(run: LocalRun, result: dict[str, Any]) -> str:
    """The pipeline's error for this failure, its traceback logged as the pipeline logs it."""
    message = notebook_run_log.describe_failure(
        result,
        cell_timeout_seconds=run.settings.cell_timeout_seconds,
        notebook=lambda: nbformat.read(run.notebook, as_version=4),
        installed_version=_installed_version,
    )
    return notebook_run_log.report_failure(
        result, message, lambda line: run.log(line, stream="error", cell=result.get("index"))
    )


def _installed_version(package: str) -> str | None:
    provider = installed_provider(package)
    if provider is not None:
        return provider[1]
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


# --- MLflow (--mlflow URI) ------------------------------------------------------------------


def start_mlflow_run(run: LocalRun) -> None:
    """The run on the tracking server, made before the kernel starts (an unreachable server
    fails the run at once, not after the training)."""
    assert run.contract is not None and run.mlflow_uri is not None
    from mlflow import MlflowClient
    from mlflow.entities import Param

    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", MLFLOW_RETRIES)
    try:
        client = MlflowClient(tracking_uri=run.mlflow_uri)
        experiment = run_store.ensure_experiment(
            client, run.contract.experiment_name or run.contract.model_name
        )
        created = client.create_run(
            experiment,
            run_name=f"local-{run.contract.model_name}",
            tags={
                "mlops.local_run": "true",
                "mlops.notebook_path": str(run.notebook),
                "mlflow.source.name": str(run.notebook),
                **run_store.parameters_tag(run.parameters),
            },
        )
        params = run_store.run_params(run.contract, run.parameters)
        client.log_batch(
            created.info.run_id, params=[Param(key, value) for key, value in params.items()]
        )
    except Exception as exc:  # MLflow raises its own errors and requests' alike
        raise RunFailed(_mlflow_problem(run.mlflow_uri, exc), EXIT_API_ERROR) from None
    run.mlflow_run_id = created.info.run_id
    run.log(f"MLflow run {run.mlflow_run_id} at {run.mlflow_uri}")


def finish_mlflow_run(run: LocalRun, status: str) -> None:
    """Copy what the notebook logged, the executed notebook and the model into the run."""
    if run.mlflow_run_id is None or run.mlflow_uri is None or run.local_run_id is None:
        return
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=run.mlflow_uri)
    try:
        run_store.import_runs(
            client,
            run.mlflow_run_id,
            run.folder.work_dir,
            run.local_run_id,
            lambda text: run.log(text, stream="stderr"),
        )
        if run.folder.executed_notebook.is_file():
            client.log_artifact(run.mlflow_run_id, str(run.folder.executed_notebook), "notebook")
        if run.folder.model_output_path.is_file():
            client.log_artifact(run.mlflow_run_id, str(run.folder.model_output_path), "model")
        # MLflow prints "View run ... at" links on stdout, which must hold only the log.
        with contextlib.redirect_stdout(sys.stderr):
            client.set_terminated(
                run.mlflow_run_id, status="FINISHED" if status == "success" else "FAILED"
            )
    except Exception as exc:
        raise RunFailed(_mlflow_problem(run.mlflow_uri, exc), EXIT_API_ERROR) from None
    run.log(f"logged to MLflow run {run.mlflow_run_id} at {run.mlflow_uri}")


def _mlflow_problem(uri: str, exc: Exception) -> str:
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return (
        f"cannot log to MLflow at {uri}: {first} (is it running? a server that asks for "
        "credentials takes $MLFLOW_TRACKING_USERNAME and $MLFLOW_TRACKING_PASSWORD)"
    )


# --- the command ----------------------------------------------------------------------------


def run_locally(run: LocalRun) -> int:
    """Validate, execute, judge by the gate; print the log; return the exit status."""
    outcome: dict[str, Any] = {"notebook": str(run.notebook)}
    run.log(
        "running unsandboxed, as you, on this machine (the platform runs notebooks in its "
        "kernel sandbox: no network, no view of your files)"
    )
    status = "failed"
    try:
        run.phase = "validate"
        run.contract = validate(run)
        outcome.update(model_name=run.contract.model_name, version=run.contract.version)
        if run.mlflow_uri:
            run.phase = None
            start_mlflow_run(run)
        run.phase = "execute"
        started = time.monotonic()
        try:
            execute(run)
        finally:
            if run.local_run_id is not None:
                run.metrics = run_store.local_metrics(run.folder.work_dir, run.local_run_id)
        run.log(f"phase execute: success in {time.monotonic() - started:.2f} s")
        run.phase = "gate"
        verdict = evaluate_gate(
            run.contract.gate, run.metrics, accuracy_floor=run.settings.accuracy_floor
        )
        run.log(verdict.reason)
        outcome["gate"] = {"passed": verdict.passed, "reason": verdict.reason}
        status = "success"
        code = EXIT_SUCCESS if verdict.passed else EXIT_GATE_FAILED
    except RunFailed as exc:
        run.log(f"{run.phase}: {exc}" if run.phase else str(exc), stream="error")
        code = exc.exit_code
    except KeyboardInterrupt:
        run.log("interrupted", stream="error")
        code = EXIT_INTERRUPTED
    run.phase = None
    if code != EXIT_INTERRUPTED:
        try:
            finish_mlflow_run(run, status)
        except RunFailed as exc:
            run.log(str(exc), stream="error")
            code = exc.exit_code
    outcome.update(
        metrics=run.metrics,
        model_path=str(run.folder.model_output_path)
        if run.folder.model_output_path.is_file()
        else None,
        executed_notebook=str(run.folder.executed_notebook)
        if run.folder.executed_notebook.is_file()
        else None,
        mlflow_run_id=run.mlflow_run_id,
    )
    _summary(run, outcome, status)
    return code


def _summary(run: LocalRun, outcome: dict[str, Any], status: str) -> None:
    if run.metrics:
        shown = ", ".join(f"{key}={value:g}" for key, value in sorted(run.metrics.items()))
        run.log(f"metrics: {shown}")
    if outcome["model_path"]:
        run.log(f"model written to {outcome['model_path']}")
    if outcome["executed_notebook"]:
        run.log(f"executed notebook: {outcome['executed_notebook']}")
    run.log(f"run {status}", stream="status", status=status, **outcome)


@click.command("run")
@click.argument("notebook", type=click.Path(path_type=Path))
@parameter_options
@click.option(
    "--output",
    "-o",
    type=click.Path(path_type=Path, file_okay=False),
    help="the run's folder: model, executed notebook, MLflow store (default: "
    ".mlops-run/<notebook name>; emptied at each run)",
)
@click.option(
    "--mlflow",
    "mlflow_uri",
    metavar="URI",
    help="also copy the run into a run on this MLflow tracking server",
)
@click.option(
    "--min-accuracy",
    type=float,
    help="the gate threshold a notebook gets when it sets none, and the floor (default: "
    "$MIN_ACCURACY_THRESHOLD, else the platform's default)",
)
@json_option
def run_command(
    notebook: Path,
    name_values: tuple[tuple[str, str], ...],
    output: Path | None,
    mlflow_uri: str | None,
    min_accuracy: float | None,
) -> int:
    """Run a notebook's tagged cells here, as a pipeline would: its log, metrics, gate verdict
    and model (exit 0: the gate passed, 5: it did not, 1: the run failed)."""
    if not notebook.is_file():
        click.echo(f"mlops: {notebook}: no such notebook file", err=True)
        return EXIT_NOT_FOUND
    parameters = collect((), name_values)
    try:
        validate_parameters(parameters)
    except ValueError as exc:
        raise BadInput(str(exc)) from None
    run = LocalRun(
        notebook=notebook.resolve(),
        folder=prepare_output(output or DEFAULT_OUTPUT / notebook.stem),
        parameters=parameters,
        settings=read_settings(min_accuracy),
        print_event=make_printer(sys.stdout, as_json=invocation().as_json),
        mlflow_uri=mlflow_uri,
    )
    return run_locally(run)
