"""The MLflow Model Registry as the single source of truth for what is served.

The served version of a model is whatever version its serving alias (SERVING_ALIAS, default
`production`) names. The backend and the worker move the alias; model servers follow it. The
version tags written at registration (repo, branch, commit, pipeline id, notebook VERSION) and
the gate params the worker logs on the run are read back here so that every reader agrees on
their names.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import mlflow.artifacts
import requests
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException, RestException
from mlflow.models import Model
from mlflow.protos.databricks_pb2 import RESOURCE_DOES_NOT_EXIST, ErrorCode

TAG_REPO = "repo"
TAG_BRANCH = "branch"
TAG_COMMIT = "commit"
TAG_PIPELINE_ID = "pipeline_id"
TAG_NOTEBOOK_VERSION = "version"
# The deploy phase's gate verdict on the version (JSON of `deploy_gate.GateResult`): pages mark a
# version below its gate, and a manual deploy of one asks for confirmation.
TAG_GATE_VERDICT = "gate_verdict"
TAG_NOTEBOOK_PATH = "notebook_path"
# Tag of the run and of the model version holding, as JSON, the parameters the trigger gave
# (papermill's overrides); the run's params mix them with the notebook's own values.
TAG_TRIGGER_PARAMETERS = "mlops.parameters"

# Run params the worker logs from the notebook's gate (worker/tracking.py: `mlops.gate_<key>`).
GATE_PARAM_PREFIX = "mlops.gate_"

_PAGE = 200


def registry_client(tracking_uri: str) -> MlflowClient:
    """A client for the tracking server that also hosts the registry."""
    return MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)


def not_found(exc: MlflowException) -> bool:
    """Whether MLflow answered that the model, version, alias or tag does not exist."""
    return exc.error_code == ErrorCode.Name(RESOURCE_DOES_NOT_EXIST) or (
        isinstance(exc, RestException) and "not found" in str(exc).lower()
    )


def mlflow_unreachable(exc: BaseException) -> bool:
    """Whether `exc` says the tracking server gave no answer (refused, reset, timed out, 5xx).

    An answer that refuses the request (unknown name, bad argument) is a RestException: MLflow
    is up. A call that got no answer is a plain MlflowException whose cause or context is the
    `requests` error (MLflow's client wraps it so), or that error itself from artifact downloads.
    """
    if isinstance(exc, requests.RequestException):
        return True
    if not isinstance(exc, MlflowException) or isinstance(exc, RestException):
        return False
    return isinstance(exc.__cause__ or exc.__context__, requests.RequestException)


@dataclass
class VersionInfo:
    """One registered version with what a person needs to choose it."""

    version: str
    created_at: datetime
    run_id: str | None
    status: str
    metrics: dict[str, float] = field(default_factory=dict)
    commit: str | None = None
    branch: str | None = None
    repo: str | None = None
    pipeline_id: int | None = None
    notebook_version: str | None = None
    gate: dict[str, Any] | None = None
    # The gate verdict the deploy phase stored (TAG_GATE_VERDICT), None for versions it did not
    # judge (registered elsewhere, or before verdicts were kept).
    verdict: dict[str, Any] | None = None
    tags: dict[str, str] = field(default_factory=dict)
    # The run's params, gate params left out: the config cell's and `parameters` cell's values
    # as they ran (the trigger's overrides applied), plus what the notebook logged itself.
    params: dict[str, str] = field(default_factory=dict)
    # The parameters the trigger gave (TAG_TRIGGER_PARAMETERS), None when it gave none.
    given_parameters: dict[str, Any] | None = None
    run: RunFacts | None = None


@dataclass(frozen=True)
class RunFacts:
    """When and on what the version's run trained: what a comparison lists beside the commit."""

    status: str
    started_at: datetime | None
    ended_at: datetime | None
    # Data sets the notebook logged with `mlflow.log_input` ("name (digest)").
    datasets: tuple[str, ...] = ()


@dataclass(frozen=True)
class InputFeatures:
    """What one row of a version's input holds, as its MLflow signature says (None: unknown)."""

    names: list[str] | None
    count: int | None


def model_exists(client: MlflowClient, name: str) -> bool:
    """Whether a registered model of that name exists."""
    try:
        client.get_registered_model(name)
    except MlflowException as exc:
        if not_found(exc):
            return False
        raise
    return True


def version_exists(client: MlflowClient, name: str, version: str) -> bool:
    """Whether `version` of model `name` is registered."""
    try:
        client.get_model_version(name, version)
    except MlflowException as exc:
        if not_found(exc):
            return False
        raise
    return True


def served_version(client: MlflowClient, name: str, alias: str) -> str | None:
    """The version the serving alias names, or None when the model is not served (or unknown)."""
    try:
        return str(client.get_model_version_by_alias(name, alias).version)
    except MlflowException as exc:
        if not_found(exc):
            return None
        raise


def set_served_version(client: MlflowClient, name: str, version: str, alias: str) -> None:
    """Point the serving alias at `version`: from now on that version is the one served."""
    client.set_registered_model_alias(name, alias, str(version))


def clear_served_version(client: MlflowClient, name: str, alias: str) -> None:
    """Remove the serving alias: the model keeps its versions but is no longer served."""
    try:
        client.delete_registered_model_alias(name, alias)
    except MlflowException as exc:
        if not not_found(exc):
            raise


def all_served_versions(client: MlflowClient, alias: str) -> dict[str, str]:
    """Model name → served version for every registered model carrying the alias."""
    served: dict[str, str] = {}
    token: str | None = None
    while True:
        page = client.search_registered_models(max_results=_PAGE, page_token=token)
        for model in page:
            version = (model.aliases or {}).get(alias)
            if version is not None:
                served[model.name] = str(version)
        token = page.token
        if not token:
            return served


def registered_model_names(client: MlflowClient) -> list[str]:
    """Every registered model's name, sorted."""
    names: list[str] = []
    token: str | None = None
    while True:
        page = client.search_registered_models(max_results=_PAGE, page_token=token)
        names.extend(model.name for model in page)
        token = page.token
        if not token:
            return sorted(names)


def list_versions(client: MlflowClient, name: str) -> list[VersionInfo]:
    """Every version of `name`, newest first, with the metrics of the run that produced it."""
    versions: list[VersionInfo] = []
    token: str | None = None
    while True:
        page = client.search_model_versions(
            f"name = '{_quote(name)}'", max_results=_PAGE, page_token=token
        )
        versions.extend(_version_info(client, mv) for mv in page)
        token = page.token
        if not token:
            break
    versions.sort(key=lambda v: int(v.version) if v.version.isdigit() else 0, reverse=True)
    return versions


def get_version(client: MlflowClient, name: str, version: str) -> VersionInfo:
    """One version with its metrics and tags (raises MlflowException when unknown)."""
    return _version_info(client, client.get_model_version(name, version))


def delete_model(client: MlflowClient, name: str) -> None:
    """Delete the registered model and all its versions (runs and artifacts stay in tracking)."""
    client.delete_registered_model(name)


def _quote(value: str) -> str:
    return value.replace("'", "\\'")


def input_features(tracking_uri: str, name: str, version: str) -> InputFeatures:
    """The feature names and count in the version's signature, read from its MLmodel file.

    Only the small MLmodel file is fetched, from the registry rather than a model server, so
    this answers for any version, served or not, while every model server is down. A model
    logged without a signature gives (None, None); a tensor signature gives a count only.
    """
    with tempfile.TemporaryDirectory(prefix="mlmodel-") as tmp:
        local = mlflow.artifacts.download_artifacts(
            artifact_uri=f"models:/{name}/{version}/MLmodel",
            dst_path=tmp,
            tracking_uri=tracking_uri,
            registry_uri=tracking_uri,
        )
        signature = Model.load(local).signature
    schema = signature.inputs if signature is not None else None
    if schema is None:
        return InputFeatures(None, None)
    if schema.is_tensor_spec():
        shape = schema.inputs[0].shape if len(schema.inputs) == 1 else None
        count = int(shape[-1]) if shape and len(shape) == 2 and shape[-1] > 0 else None
        return InputFeatures(None, count)
    names = [str(n) for n in schema.input_names()] if schema.has_input_names() else None
    return InputFeatures(names, len(names) if names else len(schema.inputs))


def gate_from_params(params: dict[str, str]) -> dict[str, Any] | None:
    """The gate {metric, threshold, direction} logged as run params, or None when incomplete."""
    metric = params.get(f"{GATE_PARAM_PREFIX}metric")
    threshold = params.get(f"{GATE_PARAM_PREFIX}threshold")
    direction = params.get(f"{GATE_PARAM_PREFIX}direction")
    if not metric or direction not in ("max", "min") or threshold is None:
        return None
    try:
        value = float(threshold)
    except ValueError:
        return None
    return {"metric": metric, "threshold": value, "direction": direction}


def stored_verdict(text: str | None) -> dict[str, Any] | None:
    """A verdict stored in TAG_GATE_VERDICT (`deploy_gate.GateResult.to_json`), or None when
    absent or unreadable. Parsed here, not in deploy_gate: model servers read the registry and
    have no notebook-contract dependencies."""
    if not text:
        return None
    try:
        data = json.loads(text)
    except ValueError:
        return None
    if not isinstance(data, dict) or not isinstance(data.get("passed"), bool):
        return None
    return data


def _version_info(client: MlflowClient, mv: Any) -> VersionInfo:
    tags = dict(mv.tags or {})
    metrics: dict[str, float] = {}
    params: dict[str, str] = {}
    facts: RunFacts | None = None
    if mv.run_id:
        try:
            run = client.get_run(mv.run_id)
        except MlflowException as exc:
            if not not_found(exc):
                raise
        else:
            metrics, params = dict(run.data.metrics), dict(run.data.params)
            facts = _run_facts(run)
    pipeline = tags.get(TAG_PIPELINE_ID)
    return VersionInfo(
        version=str(mv.version),
        created_at=datetime.fromtimestamp(mv.creation_timestamp / 1000, tz=UTC),
        run_id=mv.run_id or None,
        status=str(mv.status),
        metrics=metrics,
        commit=tags.get(TAG_COMMIT),
        branch=tags.get(TAG_BRANCH),
        repo=tags.get(TAG_REPO),
        pipeline_id=int(pipeline) if pipeline and pipeline.isdigit() else None,
        notebook_version=tags.get(TAG_NOTEBOOK_VERSION),
        gate=gate_from_params(params),
        verdict=stored_verdict(tags.get(TAG_GATE_VERDICT)),
        tags=tags,
        params={k: v for k, v in params.items() if not k.startswith(GATE_PARAM_PREFIX)},
        given_parameters=given_parameters(tags.get(TAG_TRIGGER_PARAMETERS)),
        run=facts,
    )


def given_parameters(text: str | None) -> dict[str, Any] | None:
    """The trigger's parameters kept in TAG_TRIGGER_PARAMETERS, None when absent or unreadable."""
    if not text:
        return None
    try:
        data = json.loads(text)
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


def _run_facts(run: Any) -> RunFacts:
    info = run.info
    inputs = getattr(run, "inputs", None)
    datasets = tuple(
        f"{item.dataset.name} ({item.dataset.digest})"
        for item in (getattr(inputs, "dataset_inputs", None) or [])
    )
    return RunFacts(
        status=str(info.status),
        started_at=_when(info.start_time),
        ended_at=_when(info.end_time),
        datasets=datasets,
    )


def _when(millis: int | None) -> datetime | None:
    return datetime.fromtimestamp(millis / 1000, tz=UTC) if millis else None
