"""The MLflow store a notebook run logs to (a folder of its own), and its copy into a real run.

A notebook's kernel reaches no tracking server: its `mlflow.*` calls go to a file store in the
run's work folder (MLFLOW_TRACKING_URI is injected pointing there, with a run created
beforehand under the experiment name the real run has). Afterwards the store is copied into a
run of a tracking server: params, metrics (every step and timestamp), tags and artifacts; runs
the notebook started itself (nested runs, runs in other experiments) become runs of their own,
with their parent links kept; models it logged become logged models of the run. The worker
copies into the pipeline's run (worker/local_tracking.py); `mlops run --mlflow URI` into a run
on that server.

Everything read here was written by untrusted code. Nothing of the notebook is alive when the
copy starts, so the tree is first stripped of symbolic links and anything but plain files and
folders: a link to a file of the copier's (a key, say) would otherwise be read and uploaded
with its rights.
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from mlflow import MlflowClient
from mlflow.entities import LoggedModelOutput, Metric, Param, Run, RunTag, ViewType
from mlflow.exceptions import MlflowException
from mlflow.models import Model

from mlops_core.model_registry import TAG_TRIGGER_PARAMETERS
from mlops_core.notebook_contract import NotebookContract
from mlops_core.notebook_runner import STORE_DIR, RunFolder

# Set by the local client for the notebook's own environment; the real run keeps its own.
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
MAX_PARAM_LENGTH = 6000

Say = Callable[[str], None]


def store_uri(work_dir: Path) -> str:
    """The tracking URI the kernel gets: a file store in its own work folder."""
    return RunFolder(work_dir).store_uri


def local_client(work_dir: Path) -> MlflowClient:
    # The file store is in maintenance mode in MLflow 3 and refuses to open without this.
    os.environ["MLFLOW_ALLOW_FILE_STORE"] = "true"
    return MlflowClient(tracking_uri=store_uri(work_dir))


def ensure_experiment(client: MlflowClient, name: str) -> str:
    """The id of the experiment `name`, created if missing (two workers may race to create)."""
    found = client.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    try:
        return client.create_experiment(name)
    except MlflowException:
        found = client.get_experiment_by_name(name)
        if found is None:
            raise
        return found.experiment_id


def run_params(contract: NotebookContract, parameters: Mapping[str, Any]) -> dict[str, str]:
    """The params of a notebook run: the config cell's, overridden by the parameters given
    (their values are what ran), and the gate as `mlops.gate_*`."""
    params = {**contract.params, **parameters}
    params.update({f"mlops.gate_{k}": v for k, v in contract.gate.as_dict().items()})
    return {key: param_value(value) for key, value in params.items()}


def parameters_tag(parameters: Mapping[str, Any]) -> dict[str, str]:
    """The given parameters as one JSON tag (the run's params mix them with the notebook's
    defaults; the tag says which values were given); none when none were."""
    if not parameters:
        return {}
    return {TAG_TRIGGER_PARAMETERS: param_value(json.dumps(parameters, sort_keys=True))}


def param_value(value: Any) -> str:
    return str(value)[:MAX_PARAM_LENGTH]


def create_local_run(work_dir: Path, experiment_name: str, run_name: str) -> str:
    """Create the run the kernel resumes (MLFLOW_RUN_ID), in the experiment the real one has.

    The name matters: a notebook's `mlflow.set_experiment("x")` followed by a run of the
    pipeline's must not find its run in another experiment.
    """
    local = local_client(work_dir)
    return local.create_run(
        ensure_experiment(local, experiment_name), run_name=run_name
    ).info.run_id


def local_metrics(work_dir: Path, run_id: str) -> dict[str, float]:
    """The latest value of every metric the notebook logged to its run."""
    return dict(local_client(work_dir).get_run(run_id).data.metrics)


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


def import_runs(
    target: MlflowClient, target_run_id: str, work_dir: Path, local_run_id: str, say: Say
) -> None:
    """Copy what the notebook logged in `work_dir`'s store into `target_run_id` (see module
    doc); `say` reports what was not copied."""
    store = work_dir / STORE_DIR
    for dropped in remove_links(store):
        say(f"not copied to MLflow (not a plain file): {dropped}")
    local = local_client(work_dir)
    experiments = local.search_experiments(view_type=ViewType.ALL)
    runs = [
        run
        for experiment in experiments
        for run in local.search_runs([experiment.experiment_id], run_view_type=ViewType.ALL)
    ]
    names = {e.experiment_id: e.name for e in experiments}
    mapping = {local_run_id: target_run_id}
    for run in sorted(runs, key=lambda r: r.info.start_time or 0):
        if run.info.run_id not in mapping:
            mapping[run.info.run_id] = _create_run(
                target, target_run_id, run, names[run.info.experiment_id]
            )
    for run in runs:
        _copy_run(target, target_run_id, local, run, mapping, say)
    models = local.search_logged_models(experiment_ids=list(names))
    for model in models:
        if model.source_run_id in mapping:
            upload_model(
                target,
                Path(_local_path(model.artifact_location)),
                name=model.name,
                run_id=mapping[model.source_run_id],
                params=model.params,
                tags={k: v for k, v in model.tags.items() if not k.startswith("mlflow.")},
                model_type=model.model_type,
            )


def upload_model(
    target: MlflowClient,
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
    model (only it may unpickle what the notebook exported), the caller uploads the files.
    """
    remove_links(local_dir)
    run = target.get_run(run_id)
    model = target.create_logged_model(
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
    target.log_model_artifacts(model.model_id, str(local_dir))
    target.log_outputs(run_id, [LoggedModelOutput(model.model_id, step=0)])
    target.finalize_logged_model(model.model_id, "READY")
    return model.model_id


def _create_run(target: MlflowClient, main_run_id: str, run: Run, experiment_name: str) -> str:
    """A run on the server for a run the notebook started itself."""
    experiment = (
        target.get_run(main_run_id).info.experiment_id
        if experiment_name == DEFAULT_EXPERIMENT
        else ensure_experiment(target, experiment_name)
    )
    created = target.create_run(
        experiment, start_time=run.info.start_time, run_name=run.info.run_name
    )
    return created.info.run_id


def _copy_run(
    target: MlflowClient,
    main_run_id: str,
    local: MlflowClient,
    run: Run,
    mapping: dict[str, str],
    say: Say,
) -> None:
    copy_to = mapping[run.info.run_id]
    main = copy_to == main_run_id
    metrics = [
        Metric(m.key, m.value, m.timestamp, m.step)
        for key in run.data.metrics
        for m in local.get_metric_history(run.info.run_id, key)
    ]
    for start in range(0, len(metrics), BATCH):
        target.log_batch(copy_to, metrics=metrics[start : start + BATCH])
    _copy_params(target, run, copy_to, say)
    tags = []
    for key, value in run.data.tags.items():
        if key in RUN_LINK_TAGS:
            if value in mapping:
                tags.append(RunTag(key, mapping[value]))
        elif key not in LOCAL_ONLY_TAGS or not main:
            tags.append(RunTag(key, value))
    for start in range(0, len(tags), PARAM_BATCH):
        target.log_batch(copy_to, tags=tags[start : start + PARAM_BATCH])
    artifacts = Path(_local_path(run.info.artifact_uri))
    if artifacts.is_dir() and any(artifacts.iterdir()):
        target.log_artifacts(copy_to, str(artifacts))
    if not main and run.info.end_time:
        target.set_terminated(copy_to, status=run.info.status, end_time=run.info.end_time)


def _copy_params(target: MlflowClient, run: Run, copy_to: str, say: Say) -> None:
    """Params the real run lacks; a changed value is reported, not fatal (MLflow forbids it)."""
    existing = target.get_run(copy_to).data.params
    params = []
    for key, value in run.data.params.items():
        if key not in existing:
            params.append(Param(key, value))
        elif existing[key] != value:
            say(
                f"param {key!r}={value!r} not copied to MLflow: the run already has "
                f"{key!r}={existing[key]!r} (from the config cell)"
            )
    for start in range(0, len(params), PARAM_BATCH):
        try:
            target.log_batch(copy_to, params=params[start : start + PARAM_BATCH])
        except MlflowException as exc:
            say(f"params not copied to MLflow: {exc.message}")


def _local_path(uri: str) -> str:
    parsed = urlparse(uri)
    return unquote(parsed.path) if parsed.scheme in ("file", "") else uri
