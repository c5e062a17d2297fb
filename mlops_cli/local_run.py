"""`mlops run NOTEBOOK [-p NAME VALUE]...`: a notebook run here, as a pipeline would run it.

No git, webhook or server: the notebook on disk is checked with the validate phase's contract
check, its tagged cells run in the platform's notebook runner (mlops_core/notebook_runner.py:
the same cell selection, the same papermill parameter injection, the same work-folder layout and
kernel environment allow-list, the same log lines), its `mlflow.log_*` calls land in a file store
of the run's own folder (mlops_core/run_store.py), and its metrics are judged by the deploy gate
(mlops_core/deploy_gate.py). The model goes where the export cell writes it: MODEL_OUTPUT_PATH,
`OUTPUT/output/model.joblib`. `--mlflow URI` then copies the run into a run on that server, as
the worker copies a pipeline's, and holds the run to the version that server's registry serves
now, as the deploy phase does (mlops_core/served_gate.py).

Unlike a pipeline, the kernel runs unsandboxed by default, as you, on this machine: it is your
notebook, and the sandbox needs root. `--sandbox` runs it in the pipeline's kernel sandbox
(mlops_core/sandbox.py), the notebook's folder bound read-only. It uses this environment's
packages: a requirements.txt beside the notebook is not installed (the worker's cached
environments are the worker's; the log gives the pip command that installs it here).
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import os
import shlex
import shutil
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
from mlops_core import notebook_run_log, run_store, sandbox, served_gate
from mlops_core.deploy_gate import GateResult, apply_floor, describe_gates, evaluate_gate
from mlops_core.kernel_env import kernel_environment
from mlops_core.log_events import LogEvent
from mlops_core.model_registry import registry_client
from mlops_core.notebook_contract import (
    ContractViolation,
    NotebookContract,
    check_notebook,
    prepare_for_execution,
    read_notebook,
    strip_execution_marks,
)
from mlops_core.notebook_requirements import REQUIREMENTS_FILE, installed_provider
from mlops_core.notebook_runner import (
    RUNNER_MODULE,
    STORE_DIR,
    RunFolder,
    install_kernel_startup,
)
from mlops_core.run_parameters import overridden_by_later_cells, validate_parameters
from mlops_core.runner_process import read_executed, run_notebook
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

    @property
    def sandboxed(self) -> bool:
        """Whether the kernel runs in the pipeline's sandbox (`--sandbox`)."""
        return self.settings.kernel_sandbox == "on"

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


def read_settings(min_accuracy: float | None, *, sandboxed: bool = False) -> Settings:
    """The platform's settings from this environment (no .env: this is not the platform).

    KERNEL_SANDBOX is the flag's: a local run is sandboxed when asked to, whatever the
    worker's setting says.
    """
    try:
        settings = Settings(_env_file=None)  # type: ignore[call-arg]
    except ValidationError as exc:
        raise BadInput(f"a platform setting in the environment is invalid: {exc}") from None
    update: dict[str, Any] = {"kernel_sandbox": "on" if sandboxed else "off"}
    if min_accuracy is not None:
        update["min_accuracy_threshold"] = min_accuracy
    return settings.model_copy(update=update)


def check_output_for_sandbox(notebook: Path, output: Path) -> None:
    """Refuse an --output directly in the notebook's folder: the sandbox hides the folder
    holding the run's folder (as it hides other pipelines'), and the notebook's with it."""
    if output.resolve().parent == notebook.resolve().parent:
        raise BadInput(
            f"--output {output}: with --sandbox, the run's folder cannot be directly in the "
            "notebook's folder (the sandbox hides what is beside the run's folder): choose "
            "another --output, e.g. the default .mlops-run/<notebook name>"
        )


# --- the phases -----------------------------------------------------------------------------


def isolate(run: LocalRun) -> None:
    """Say where the kernel runs; with --sandbox, fail now when the sandbox cannot run here."""
    if not run.sandboxed:
        run.log(
            "running unsandboxed, as you, on this machine (the platform runs notebooks in its "
            "kernel sandbox: no network, no view of your files; --sandbox runs it here too)"
        )
        return
    try:
        isolation = sandbox.check_available(run.settings)
    except sandbox.SandboxUnavailable as exc:
        raise RunFailed(
            f"--sandbox: {exc} (for `mlops run`, KERNEL_SANDBOX does not matter: run without "
            "--sandbox to run the kernel unsandboxed, as you)"
        ) from None
    run.log(f"running in the platform's kernel sandbox ({isolation.description})")


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
            f"{requirements} is not installed by `mlops run` (a pipeline installs what the kernel "
            "lacks): the kernel has this environment's packages; to add the ones it lists, run "
            f"`{shlex.quote(sys.executable)} -m pip install -r {shlex.quote(str(requirements))}`"
        )
    sandbox.prepare_work_dir(run.settings, folder.work_dir)  # nothing unless --sandbox
    prepared = prepare_for_execution(nbformat.read(run.notebook, as_version=4))
    nbformat.write(prepared, folder.input_notebook)  # the sandbox reads it, never writes it
    cwd = run.notebook.parent
    ended = run_notebook(
        folder,
        sandbox.wrap(
            run.settings,
            [sys.executable, "-I", "-m", RUNNER_MODULE, str(folder.spec_path)],
            work_dir=folder.work_dir,
            cwd=cwd,
            read_only=[cwd],
        ),
        cwd=cwd,
        env=kernel_environment(
            run.settings,
            home=folder.home,
            extra={
                **folder.kernel_variables(
                    run_id=run.local_run_id,
                    pipeline_id=LOCAL_PIPELINE_ID,
                    cpu_seconds=run.settings.kernel_cpu_seconds,
                ),
                # This TMPDIR is not in the sandbox, whose /tmp is its own.
                **({"TMPDIR": "/tmp"} if run.sandboxed else {}),
            },
        ),
        parameters=folder.injected_parameters(run.parameters, LOCAL_PIPELINE_ID),
        cell_timeout=run.settings.cell_timeout_seconds,
        log=lambda line: run.log(line.text, stream=line.stream, cell=line.cell),
    )
    if run.sandboxed:
        for dropped in run_store.remove_links(folder.work_dir / STORE_DIR):
            run.log(f"ignored (not a plain file): {STORE_DIR}/{dropped}", stream="stderr")
    executed = read_executed(folder.executed_notebook)
    if executed is not None:
        nbformat.write(strip_execution_marks(executed), folder.executed_notebook)
    if ended.result is None:
        raise RunFailed(f"the notebook runner stopped unexpectedly (exit code {ended.returncode})")
    if not ended.result.get("ok"):
        raise RunFailed(_describe_failure(run, ended.result))
    if not folder.model_output_path.is_file():
        raise RunFailed(
            "the notebook did not write a model to MODEL_OUTPUT_PATH "
            "(export it with joblib.dump(model, MODEL_OUTPUT_PATH))"
        )


def _describe_failure(run: LocalRun, result: dict[str, Any]) -> str:
    """The pipeline's error for this failure, its traceback logged as the pipeline logs it."""
    message = notebook_run_log.describe_failure(
        result,
        cell_timeout_seconds=run.settings.cell_timeout_seconds,
        notebook=lambda: nbformat.read(run.notebook, as_version=4),
        installed_version=_installed_version,
        limit_exceeded=lambda raised: sandbox.limit_exceeded(run.settings, raised),
    )
    offline = sandbox.no_network_hint(run.settings, str(result.get("message", "")))
    if result.get("kind") == "error" and offline:
        message += f" ({offline})"
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


def judge(run: LocalRun) -> GateResult:
    """The deploy gate's verdict; with --mlflow, held to the version its registry serves now,
    as the deploy phase holds a pipeline's version."""
    assert run.contract is not None
    if run.mlflow_uri is None:
        return evaluate_gate(
            run.contract.gate, run.metrics, accuracy_floor=run.settings.accuracy_floor
        )
    alias = run.settings.serving_alias
    try:
        verdict = served_gate.judge(
            registry_client(run.mlflow_uri),
            run.contract.model_name,
            run.contract.gate,
            run.metrics,
            comparison=run.contract.comparison,
            settings=run.settings,
            alias=alias,
        )
    except Exception as exc:  # MLflow raises its own errors and requests' alike
        raise RunFailed(_mlflow_problem(run.mlflow_uri, exc), EXIT_API_ERROR) from None
    if verdict.passed and verdict.served_version is None and run.contract.comparison.enabled:
        run.log(
            f"no version of {run.contract.model_name} is served at {run.mlflow_uri} "
            f"(alias {alias!r}): judged by its gate alone"
        )
    return verdict


def run_locally(run: LocalRun) -> int:
    """Validate, execute, judge by the gate; print the log; return the exit status."""
    outcome: dict[str, Any] = {"notebook": str(run.notebook)}
    status = "failed"
    try:
        isolate(run)
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
        verdict = judge(run)
        run.log(verdict.reason)
        outcome["gate"] = verdict.as_dict()
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
    "--sandbox",
    "sandboxed",
    is_flag=True,
    help="run the kernel in the pipeline's kernel sandbox (needs root and bubblewrap): no "
    "network, none of your files but the notebook's folder (read-only), the kernel limits",
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
    sandboxed: bool,
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
    output = output or DEFAULT_OUTPUT / notebook.stem
    if sandboxed:
        check_output_for_sandbox(notebook, output)
    run = LocalRun(
        notebook=notebook.resolve(),
        folder=prepare_output(output),
        parameters=parameters,
        settings=read_settings(min_accuracy, sandboxed=sandboxed),
        print_event=make_printer(sys.stdout, as_json=invocation().as_json),
        mlflow_uri=mlflow_uri,
    )
    return run_locally(run)
