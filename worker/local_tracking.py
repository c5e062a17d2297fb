"""The MLflow store inside a pipeline's work folder, and its copy into the pipeline's real run.

The sandboxed kernel reaches no platform service, MLflow included, so its `mlflow.*` calls go
to a file store in its own work folder; when the sandbox has ended, the worker copies that
store into the tracking server. How both are done is mlops_core/run_store.py (`mlops run`
uses the same); this module binds them to a pipeline attempt.
"""

from __future__ import annotations

from pathlib import Path

from mlops_core import run_store
from mlops_core.run_store import remove_links, store_uri
from worker.phases.context import PhaseContext

__all__ = ["create_local_run", "import_runs", "remove_links", "store_uri", "upload_model"]


def create_local_run(ctx: PhaseContext) -> str:
    """Create the run the kernel resumes (MLFLOW_RUN_ID), in the experiment the real one has."""
    assert ctx.contract is not None
    return run_store.create_local_run(
        ctx.work_dir,
        ctx.contract.experiment_name or ctx.contract.model_name,
        f"pipeline-{ctx.pipeline_id}",
    )


def import_runs(ctx: PhaseContext) -> None:
    """Copy what the notebook logged locally into the pipeline's run on the tracking server."""
    if ctx.local_run_id is None or ctx.mlflow_run_id is None:
        return
    run_store.import_runs(
        ctx.mlflow,
        ctx.mlflow_run_id,
        ctx.work_dir,
        ctx.local_run_id,
        lambda text: ctx.log(text, stream="stderr"),
    )


def upload_model(
    ctx: PhaseContext,
    local_dir: Path,
    *,
    name: str,
    run_id: str,
) -> str:
    """Create a logged model of `run_id` from the MLflow model folder the sandbox saved."""
    return run_store.upload_model(ctx.mlflow, local_dir, name=name, run_id=run_id)
