"""The pipeline's MLflow run: one per attempt, in the notebook's experiment or the model's.

Every attempt gets a fresh run (an attempt killed with the worker leaves its run KILLED), so a
retried pipeline never mixes metrics of two executions; the pipeline row points at the run of
its latest attempt.
"""

from __future__ import annotations

import contextlib

from mlflow import MlflowClient
from mlflow.entities import Param, RunStatus
from mlflow.exceptions import MlflowException

from mlops_core.run_store import ensure_experiment, parameters_tag, run_params
from worker.phases.context import PhaseContext


def experiment_id(ctx: PhaseContext, name: str) -> str:
    """The id of the experiment `name`, created if missing (two workers may race to create)."""
    return ensure_experiment(ctx.mlflow, name)


def start_run(ctx: PhaseContext) -> str:
    """Create this attempt's run with the pipeline's tags and the notebook's params."""
    assert ctx.contract is not None
    previous = ctx.mlflow_run_id
    if previous:
        end_run(ctx, previous, RunStatus.KILLED, only_if_running=True)
    run = ctx.mlflow.create_run(
        experiment_id(ctx, ctx.contract.experiment_name or ctx.contract.model_name),
        run_name=f"pipeline-{ctx.pipeline_id}",
        tags={
            "mlops.pipeline_id": str(ctx.pipeline_id),
            "mlops.attempt": str(ctx.attempt),
            "mlops.repo": ctx.repo_url,
            "mlops.branch": ctx.branch,
            "mlops.notebook_path": ctx.notebook_path,
            "mlflow.source.git.commit": ctx.commit_sha or "",
            "mlflow.source.git.repoURL": ctx.repo_url,
            "mlflow.source.name": ctx.notebook_path,
            **trigger_parameters_tag(ctx),
        },
    )
    run_id = run.info.run_id
    params = run_params(ctx.contract, ctx.parameters)
    ctx.mlflow.log_batch(run_id, params=[Param(key, value) for key, value in params.items()])
    ctx.mlflow_run_id = run_id
    ctx.update_pipeline(mlflow_run_id=run_id)
    return run_id


def trigger_parameters_tag(ctx: PhaseContext) -> dict[str, str]:
    """The trigger's parameters as one JSON tag (none when it set none)."""
    return parameters_tag(ctx.parameters)


def collect_metrics(ctx: PhaseContext) -> dict[str, float]:
    """The latest value of every metric logged to the run (what the pipeline shows)."""
    if not ctx.mlflow_run_id:
        return {}
    metrics = dict(ctx.mlflow.get_run(ctx.mlflow_run_id).data.metrics)
    ctx.metrics = metrics
    ctx.update_pipeline(metrics=metrics)
    return metrics


def end_run(
    ctx: PhaseContext, run_id: str, status: RunStatus | int, *, only_if_running: bool = False
) -> None:
    """Set the run's final status (FINISHED, FAILED or KILLED) to match the pipeline.

    Tried once, with a plain client rather than the worker's retrying one: a run left RUNNING
    is cosmetic, and the pipeline's end must not wait through an MLflow outage for it.
    """
    name = RunStatus.to_string(status) if isinstance(status, int) else str(status)
    client = MlflowClient(tracking_uri=ctx.settings.mlflow_tracking_uri)
    with contextlib.suppress(MlflowException):
        if only_if_running and client.get_run(run_id).info.status != "RUNNING":
            return
        client.set_terminated(run_id, status=name)
