"""register: check the exported model, log it to the run, register a version of MODEL_NAME.

Loading the exported model and saving it as an MLflow model folder happen in a sandboxed
child (worker/sandbox/model_child.py); uploading that folder and the registry calls happen
here. A version is tagged with the pipeline id and searched for first, so a redelivered task
adopts the version an earlier attempt registered instead of creating a second one.
"""

from __future__ import annotations

import json
from pathlib import Path

from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException

from mlops_core.model_registry import (
    TAG_BRANCH,
    TAG_COMMIT,
    TAG_NOTEBOOK_PATH,
    TAG_NOTEBOOK_VERSION,
    TAG_PIPELINE_ID,
    TAG_REPO,
)
from worker import local_tracking, training_reference
from worker.child_processes import start_child, stop_child, wait_child
from worker.phases.context import PhaseContext, PhaseFailed
from worker.phases.execute import sandbox_environment, sandboxed
from worker.sandbox import model_requirements
from worker.tracking import collect_metrics, trigger_parameters_tag


def run(ctx: PhaseContext) -> None:
    """Register the exported model as a new version (or adopt this pipeline's existing one)."""
    assert ctx.contract is not None and ctx.mlflow_run_id is not None
    existing = find_version(ctx)
    if existing is not None:
        adopt(ctx, existing)
        return
    logged = _log_model(ctx)
    model_id = local_tracking.upload_model(
        ctx, export_dir(ctx), name="model", run_id=ctx.mlflow_run_id
    )
    ctx.log(
        f"model logged: {logged['model_class']}"
        + ("" if logged.get("has_signature") else " (no signature: feature shape unknown)")
    )
    ctx.log(model_requirements.describe(logged["requirements"], logged["unprovided_modules"]))
    _ensure_registered_model(ctx)
    version = ctx.mlflow.create_model_version(
        ctx.contract.model_name,
        source=f"models:/{model_id}",
        run_id=ctx.mlflow_run_id,
        tags=version_tags(ctx),
        description=f"pipeline {ctx.pipeline_id} at {(ctx.commit_sha or '')[:12]}",
        model_id=model_id,
    )
    ctx.model_version = str(version.version)
    ctx.mlflow.set_tag(ctx.mlflow_run_id, "mlops.model_version", ctx.model_version)
    metrics = collect_metrics(ctx)
    ctx.update_pipeline(model_version=ctx.model_version)
    ctx.log(f"registered {ctx.contract.model_name} version {ctx.model_version}; metrics {metrics}")
    training_reference.keep(ctx)


def version_tags(ctx: PhaseContext) -> dict[str, str]:
    """Where a version came from: repo, branch, commit, pipeline, the notebook's VERSION and
    the trigger's parameters (when it gave some)."""
    assert ctx.contract is not None
    return {
        TAG_REPO: ctx.repo_url,
        TAG_BRANCH: ctx.branch,
        TAG_COMMIT: ctx.commit_sha or "",
        TAG_PIPELINE_ID: str(ctx.pipeline_id),
        TAG_NOTEBOOK_VERSION: ctx.contract.version,
        TAG_NOTEBOOK_PATH: ctx.notebook_path,
        **trigger_parameters_tag(ctx),
    }


def find_version(ctx: PhaseContext, model_name: str | None = None) -> ModelVersion | None:
    """The version of the model an earlier attempt of this pipeline registered, if any."""
    name = model_name or (ctx.contract.model_name if ctx.contract else None)
    if not name:
        return None
    query = f"name = '{name}' and tags.{TAG_PIPELINE_ID} = '{ctx.pipeline_id}'"
    found = [
        v for v in ctx.mlflow.search_model_versions(query) if v.tags.get(TAG_REPO) == ctx.repo_url
    ]
    return min(found, key=lambda v: int(v.version)) if found else None


def reuse_earlier_version(ctx: PhaseContext) -> bool:
    """From the second attempt on: adopt the version an earlier attempt registered, if any.

    Execute and register then count as done: a pipeline never registers two versions.
    """
    if ctx.model_version is not None:
        return True
    if ctx.attempt < 2:
        return False
    version = find_version(ctx)
    if version is None:
        return False
    adopt(ctx, version)
    return True


def adopt(ctx: PhaseContext, version: ModelVersion) -> None:
    """Take over the version an earlier attempt registered (the task was delivered again)."""
    ctx.model_version = str(version.version)
    ctx.model_name = version.name
    if version.run_id:
        ctx.mlflow_run_id = version.run_id
    collect_metrics(ctx)
    ctx.update_pipeline(
        model_name=version.name, model_version=ctx.model_version, mlflow_run_id=ctx.mlflow_run_id
    )
    ctx.log(
        f"version {ctx.model_version} of {version.name} was already registered by an earlier "
        "attempt of this pipeline: reusing it"
    )


def start_model_logger(ctx: PhaseContext) -> None:
    """Start the model-logging child now, so its imports overlap the notebook's run."""
    ctx.model_logger = start_child(
        sandboxed(ctx, "worker.sandbox.model_child"),
        env=sandbox_environment(ctx),
        cwd=ctx.notebook_file.parent if ctx.notebook_file else ctx.work_dir,
        stdin_pipe=True,
    )


def stop_model_logger(ctx: PhaseContext) -> None:
    """Stop the model-logging child if it is still waiting (the pipeline ended early)."""
    if ctx.model_logger is not None:
        stop_child(ctx.model_logger)
        ctx.model_logger = None


def _log_model(ctx: PhaseContext) -> dict:
    if ctx.model_logger is None:
        start_model_logger(ctx)
    assert ctx.model_logger is not None
    executed_input = ctx.work_dir / "input.ipynb"  # written just before the kernel started
    job = json.dumps(
        {
            "model_path": str(ctx.model_output_path),
            "export_dir": str(export_dir(ctx)),
            "code_dir": str(ctx.notebook_file.parent if ctx.notebook_file else ""),
            "run_started": executed_input.stat().st_mtime if executed_input.exists() else 0,
            "code_root": str(ctx.checkout_dir or ""),
        }
    )
    done = wait_child(ctx, ctx.model_logger, what="logging the model", stdin=job + "\n")
    ctx.model_logger = None
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if not lines:
        tail = " / ".join(done.stderr.strip().splitlines()[-3:])
        raise PhaseFailed(f"logging the model failed (exit code {done.returncode}): {tail}")
    result = json.loads(lines[-1])
    if not result.get("ok"):
        for line in result.get("trace", []):
            ctx.log(line.rstrip(), stream="error")
        raise PhaseFailed(result.get("error", "logging the model failed"))
    return result


def export_dir(ctx: PhaseContext) -> Path:
    """Where the sandboxed child saves the MLflow model folder for the worker to upload."""
    return ctx.work_dir / "model-export"


def _ensure_registered_model(ctx: PhaseContext) -> None:
    assert ctx.contract is not None
    try:
        ctx.mlflow.create_registered_model(ctx.contract.model_name)
    except MlflowException as exc:
        if exc.error_code not in ("RESOURCE_ALREADY_EXISTS", "ALREADY_EXISTS"):
            raise
