"""The MLflow store inside a pipeline's work folder, and its copy into the pipeline's real run.

The sandboxed kernel reaches no platform service, MLflow included, so its `mlflow.*` calls go
to a file store in its own work folder (MLFLOW_TRACKING_URI is injected pointing there, with a
run created beforehand under the same experiment name as the real one). When the sandbox has
ended, the worker copies that store into the tracking server: the pipeline's run gets the
notebook's params, metrics (every step and timestamp), tags and artifacts; runs the notebook
started itself (nested runs, runs in other experiments) become runs of their own, with their
parent links kept; models it logged become logged models of the run.

Everything read here was written by untrusted code. Nothing of the sandbox is alive when the
copy starts (its PID namespace died with it), so the tree is first stripped of symbolic links
and anything but plain files and folders: a link to a file of the worker's (a key, say) would
otherwise be read and uploaded with the worker's rights.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from urllib.parse import unquote, urlparse

from mlflow import MlflowClient
from mlflow.entities import LoggedModelOutput, Metric, Param, Run, RunTag, ViewType
from mlflow.exceptions import MlflowException
from mlflow.models import Model

from worker.phases.context import PhaseContext
from worker.tracking import experiment_id

STORE_DIR = "mlruns"
# Set by the local client for the sandbox's own environment; the real run keeps its own.
LOCAL_ONLY_TAGS = frozenset(
    {
        "mlflow.user",
        "mlflow.source.name",
        "mlflow.source.type",
        "mlflow.source.git.commit",
        "mlflow.source.git.repoURL",
        "mlflow.runName",
    }
)
RUN_LINK_TAGS = ("mlflow.parentRunId", "mlflow.rootRunId")
BATCH = 1000  # MLflow's limit of metrics per log_batch call
PARAM_BATCH = 100
DEFAULT_EXPERIMENT = "Default"


def store_uri(work_dir: Path) -> str:
    """The tracking URI the kernel gets: a file store in its own work folder."""
    return (work_dir / STORE_DIR).as_uri()


def _client(work_dir: Path) -> MlflowClient:
    # The file store is in maintenance mode in MLflow 3 and refuses to open without this.
    os.environ["MLFLOW_ALLOW_FILE_STORE"] = "true"
    return MlflowClient(tracking_uri=store_uri(work_dir))


def create_local_run(ctx: PhaseContext) -> str:
    """Create the run the kernel resumes (MLFLOW_RUN_ID), in the experiment the real one has.

    The name matters: a notebook's `mlflow.set_experiment("x")` followed by a run of the
    pipeline's must not find its run in another experiment.
    """
    assert ctx.contract is not None
    local = _client(ctx.work_dir)
    name = ctx.contract.experiment_name or ctx.contract.model_name
    found = local.get_experiment_by_name(name)
    experiment = found.experiment_id if found else local.create_experiment(name)
    return local.create_run(experiment, run_name=f"pipeline-{ctx.pipeline_id}").info.run_id


def remove_links(root: Path) -> list[str]:
    """Delete every entry under `root` that is not a plain folder or a singly linked file.

    Returns the removed paths (relative), so the log can say what was dropped.
    """
    removed: list[str] = []
    if root.is_symlink() or not root.is_dir():
        if root.is_symlink() or root.exists():
            root.unlink()
            removed.append(root.name)
        return removed
    for folder, dirs, files in os.walk(root, followlinks=False):
        for name in [*dirs, *files]:
            path = Path(folder, name)
            info = path.lstat()
            plain_dir = stat.S_ISDIR(info.st_mode)
            plain_file = stat.S_ISREG(info.st_mode) and info.st_nlink == 1
            if not (plain_dir or plain_file):
                path.unlink()
                removed.append(str(path.relative_to(root)))
                if name in dirs:
                    dirs.remove(name)
    return removed


def import_runs(ctx: PhaseContext) -> None:
    """Copy what the notebook logged locally into the tracking server (see module doc)."""
    if ctx.local_run_id is None or ctx.mlflow_run_id is None:
        return
    store = ctx.work_dir / STORE_DIR
    for dropped in remove_links(store):
        ctx.log(f"not copied to MLflow (not a plain file): {dropped}", stream="stderr")
    local = _client(ctx.work_dir)
    experiments = local.search_experiments(view_type=ViewType.ALL)
    runs = [
        run
        for experiment in experiments
        for run in local.search_runs([experiment.experiment_id], run_view_type=ViewType.ALL)
    ]
    names = {e.experiment_id: e.name for e in experiments}
    mapping = {ctx.local_run_id: ctx.mlflow_run_id}
    for run in sorted(runs, key=lambda r: r.info.start_time or 0):
        if run.info.run_id not in mapping:
            mapping[run.info.run_id] = _create_run(ctx, run, names[run.info.experiment_id])
    for run in runs:
        _copy_run(ctx, local, run, mapping)
    models = local.search_logged_models(experiment_ids=list(names))
    for model in models:
        if model.source_run_id in mapping:
            upload_model(
                ctx,
                Path(_local_path(model.artifact_location)),
                name=model.name,
                run_id=mapping[model.source_run_id],
                params=model.params,
                tags={k: v for k, v in model.tags.items() if not k.startswith("mlflow.")},
                model_type=model.model_type,
            )


def upload_model(
    ctx: PhaseContext,
    local_dir: Path,
    *,
    name: str,
    run_id: str,
    params: dict[str, str] | None = None,
    tags: dict[str, str] | None = None,
    model_type: str | None = None,
) -> str:
    """Create a logged model of `run_id` from an MLflow model folder; return its model id.

    What `mlflow.<flavor>.log_model` does in one process, split in two: the sandbox saved the
    model (only it may unpickle what the notebook exported), the worker uploads the files.
    """
    remove_links(local_dir)
    run = ctx.mlflow.get_run(run_id)
    model = ctx.mlflow.create_logged_model(
        experiment_id=run.info.experiment_id,
        name=name,
        source_run_id=run_id,
        params=params,
        tags=tags,
        model_type=model_type,
    )
    description = Model.load(str(local_dir))
    description.model_id = model.model_id
    description.model_uuid = model.model_id
    description.run_id = run_id
    description.artifact_path = model.artifact_location
    description.save(str(local_dir / "MLmodel"))
    ctx.mlflow.log_model_artifacts(model.model_id, str(local_dir))
    ctx.mlflow.log_outputs(run_id, [LoggedModelOutput(model.model_id, step=0)])
    ctx.mlflow.finalize_logged_model(model.model_id, "READY")
    return model.model_id


def _create_run(ctx: PhaseContext, run: Run, experiment_name: str) -> str:
    """A run on the server for a run the notebook started itself."""
    target = (
        ctx.mlflow.get_run(ctx.mlflow_run_id).info.experiment_id  # type: ignore[arg-type]
        if experiment_name == DEFAULT_EXPERIMENT
        else experiment_id(ctx, experiment_name)
    )
    created = ctx.mlflow.create_run(
        target, start_time=run.info.start_time, run_name=run.info.run_name
    )
    return created.info.run_id


def _copy_run(ctx: PhaseContext, local: MlflowClient, run: Run, mapping: dict[str, str]) -> None:
    target = mapping[run.info.run_id]
    main = target == ctx.mlflow_run_id
    metrics = [
        Metric(m.key, m.value, m.timestamp, m.step)
        for key in run.data.metrics
        for m in local.get_metric_history(run.info.run_id, key)
    ]
    for start in range(0, len(metrics), BATCH):
        ctx.mlflow.log_batch(target, metrics=metrics[start : start + BATCH])
    _copy_params(ctx, run, target)
    tags = []
    for key, value in run.data.tags.items():
        if key in RUN_LINK_TAGS:
            if value in mapping:
                tags.append(RunTag(key, mapping[value]))
        elif key not in LOCAL_ONLY_TAGS or not main:
            tags.append(RunTag(key, value))
    for start in range(0, len(tags), PARAM_BATCH):
        ctx.mlflow.log_batch(target, tags=tags[start : start + PARAM_BATCH])
    artifacts = Path(_local_path(run.info.artifact_uri))
    if artifacts.is_dir() and any(artifacts.iterdir()):
        ctx.mlflow.log_artifacts(target, str(artifacts))
    if not main and run.info.end_time:
        ctx.mlflow.set_terminated(target, status=run.info.status, end_time=run.info.end_time)


def _copy_params(ctx: PhaseContext, run: Run, target: str) -> None:
    """Params the real run lacks; a changed value is reported, not fatal (MLflow forbids it)."""
    existing = ctx.mlflow.get_run(target).data.params
    params = []
    for key, value in run.data.params.items():
        if key not in existing:
            params.append(Param(key, value))
        elif existing[key] != value:
            ctx.log(
                f"param {key!r}={value!r} not copied to MLflow: the run already has "
                f"{key!r}={existing[key]!r} (from the config cell)",
                stream="stderr",
            )
    for start in range(0, len(params), PARAM_BATCH):
        try:
            ctx.mlflow.log_batch(target, params=params[start : start + PARAM_BATCH])
        except MlflowException as exc:
            ctx.log(f"params not copied to MLflow: {exc.message}", stream="stderr")


def _local_path(uri: str) -> str:
    parsed = urlparse(uri)
    return unquote(parsed.path) if parsed.scheme in ("file", "") else uri
