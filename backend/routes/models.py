"""Models API: what is served, every registered version, deploy / rollback / delete, predict.

The registry alias is the truth for what is served; each change goes through
`change_served_version`, which records the deployment history and announces the change so that
model servers act at once. Registry and database work runs on the registry gate's own threads
(backend/registry_gate.py: bounded, behind a circuit breaker), never on the thread pool that
webhook intake and pipeline reads use; the prediction proxy is async (backend/model_forwarder.py)
and streams nothing it has not size-checked.
"""

from __future__ import annotations

import logging
from datetime import datetime
from functools import lru_cache
from typing import Any
from urllib.parse import quote

import redis
from fastapi import APIRouter, Depends, HTTPException, Query, Request, Response
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from pydantic import BaseModel, field_validator
from sqlalchemy.orm import Session

from backend.api_models import as_utc
from backend.api_params import INT64_MAX, ModelName, RowId
from backend.auth import require_api_token, require_predict_token, require_read_token
from backend.dependencies import get_app_settings, get_session
from backend.model_forwarder import ModelForwarder
from backend.registry_gate import RegistryGate, registry_gate
from mlops_core.access_tokens import PREDICT, configured
from mlops_core.deployments import (
    change_served_version,
    deployment_history,
    previously_served_version,
)
from mlops_core.model_events import DeploymentAction, replica_versions
from mlops_core.model_owners import ModelSource, Ownership, get_ownership, transfer_model
from mlops_core.model_registry import (
    InputFeatures,
    VersionInfo,
    delete_model,
    get_version,
    input_features,
    list_versions,
    model_exists,
    registered_model_names,
    registry_client,
    served_version,
    version_exists,
)
from mlops_core.prediction_schema import PREDICT_REQUEST_BODY
from mlops_core.request_limits import BodyTooLarge, read_capped_body
from mlops_core.schema import Repo
from mlops_core.settings import Settings

logger = logging.getLogger(__name__)

router = APIRouter(prefix="/models", tags=["models"])

API_ACTOR = "api"


class VersionChoice(BaseModel):
    """Body of deploy and rollback: a registered version number ("3" or 3)."""

    version: str | None = None

    @field_validator("version", mode="before")
    @classmethod
    def _as_text(cls, value: Any) -> Any:
        if isinstance(value, int) and not isinstance(value, bool):
            value = str(value)
        if isinstance(value, str):
            value = value.strip()
            # ASCII digits only (str.isdigit also takes "²"), within the registry's 64 bits.
            digits = value.isascii() and value.isdigit() and len(value) <= len(str(INT64_MAX))
            if not digits or int(value) > INT64_MAX:
                raise ValueError('version must be a registered version number such as "3"')
        return value


@lru_cache
def _registry(tracking_uri: str) -> MlflowClient:
    return registry_client(tracking_uri)


@lru_cache
def _redis(url: str) -> redis.Redis:
    return redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5)


async def registry(settings: Settings = Depends(get_app_settings)) -> MlflowClient:
    return _registry(settings.mlflow_tracking_uri)


def _require_model(client: MlflowClient, name: str) -> None:
    if not model_exists(client, name):
        raise HTTPException(404, f"model {name!r} is not registered")


def _require_version(client: MlflowClient, name: str, version: str) -> None:
    _require_model(client, name)
    if not version_exists(client, name, version):
        raise HTTPException(404, f"model {name!r} has no version {version}")


def _current(versions: list[VersionInfo], served: str | None) -> VersionInfo | None:
    """The version the page describes: the served one, else the newest."""
    return next((v for v in versions if v.version == served), versions[0] if versions else None)


def _model_view(
    client: MlflowClient, name: str, settings: Settings
) -> tuple[dict[str, Any], VersionInfo | None]:
    """The model as the API shows it, and the version it describes (see `_current`)."""
    versions = list_versions(client, name)
    served = served_version(client, name, settings.serving_alias)
    current = _current(versions, served)
    view = {
        "name": name,
        "alias": settings.serving_alias,
        "served_version": served,
        "latest_version": versions[0].version if versions else None,
        "gate": current.gate if current else None,
        "versions": [dict(v.as_dict(), served=v.version == served) for v in versions],
    }
    return view, current


@lru_cache(maxsize=512)
def _input_features(
    tracking_uri: str, name: str, version: str, run_id: str | None, created_at: datetime
) -> InputFeatures:
    """A version's files never change; run id and creation time tell a re-registered one apart."""
    return input_features(tracking_uri, name, version)


def _features_view(settings: Settings, name: str, version: VersionInfo | None) -> dict[str, Any]:
    """Feature names and count of the described version, from its MLflow signature.

    Read from the registry rather than a model server's GET /models so that the prediction
    form is labelled even while no model server answers, and for a version not yet loaded.
    """
    features = InputFeatures(None, None)
    if version is not None:
        try:
            features = _input_features(
                settings.mlflow_tracking_uri,
                name,
                version.version,
                version.run_id,
                version.created_at,
            )
        except (MlflowException, OSError) as exc:
            logger.warning("no signature for %s version %s: %s", name, version.version, exc)
    return {
        "features_version": version.version if version else None,
        "feature_names": features.names,
        "n_features": features.count,
    }


def _replicas(settings: Settings, name: str) -> dict[str, str] | None:
    try:
        return replica_versions(
            _redis(settings.redis_url),
            settings.serving_alias,
            name,
            settings.model_heartbeat_interval_seconds * 3,
        )
    except redis.RedisError:
        return None


@router.get("", dependencies=[Depends(require_read_token)])
async def list_models(
    settings: Settings = Depends(get_app_settings),
    client: MlflowClient = Depends(registry),
    gate: RegistryGate = Depends(registry_gate),
) -> list[dict[str, Any]]:
    """Every registered model with its served version and its versions."""

    def read() -> list[dict[str, Any]]:
        return [_model_view(client, name, settings)[0] for name in registered_model_names(client)]

    return await gate.run(read)


@router.get("/{name}", dependencies=[Depends(require_read_token)])
async def get_model(
    name: ModelName,
    session: Session = Depends(get_session),
    settings: Settings = Depends(get_app_settings),
    client: MlflowClient = Depends(registry),
    gate: RegistryGate = Depends(registry_gate),
) -> dict[str, Any]:
    """One model, plus which version each live model-server replica has loaded, the
    feature names of the served (else newest) version and the repository owning the name."""

    def read() -> dict[str, Any]:
        _require_model(client, name)
        view, current = _model_view(client, name, settings)
        view["owner"] = _owner_view(get_ownership(session, name))
        view["replicas"] = _replicas(settings, name)
        view.update(_features_view(settings, name, current))
        return view

    return await gate.run(read)


class OwnerChoice(BaseModel):
    """Body of an owner transfer: the registered repository that gets the model name."""

    repo_id: RowId


def _owner_view(ownership: Ownership | None) -> dict[str, Any] | None:
    if ownership is None:
        return None
    owner = ownership.owner
    return {
        "repo_id": owner.repo_id,
        "repo_url": owner.repo_url,
        "notebook_path": owner.notebook_path,
        "owned_since": _iso(ownership.owned_since),
    }


@router.post("/{name}/owner", dependencies=[Depends(require_api_token)])
async def transfer_owner(
    name: ModelName,
    choice: OwnerChoice,
    session: Session = Depends(get_session),
    settings: Settings = Depends(get_app_settings),
    client: MlflowClient = Depends(registry),
    gate: RegistryGate = Depends(registry_gate),
) -> dict[str, Any]:
    """Give the model name to a repository and its notebook: from then on only that repo's
    pipelines may publish versions of it (the previous owner's fail their validate phase)."""

    def transfer() -> dict[str, Any]:
        repo = session.get(Repo, choice.repo_id)
        if repo is None:
            raise HTTPException(404, f"repo {choice.repo_id} not found")
        previous = get_ownership(session, name)
        if previous is None:
            _require_model(client, name)  # a model registered before it had an owner
        new_owner = ModelSource(repo.github_url, repo.notebook_path, repo.id)
        session.close()  # the transfer is its own transaction (mlops_core.model_owners)
        ownership = transfer_model(settings.database_url, name, new_owner)
        logger.info(
            "model %s transferred from %s to %s",
            name,
            previous.owner.describe() if previous else "no owner",
            new_owner.describe(),
        )
        return {
            "name": name,
            "owner": _owner_view(ownership),
            "previous_owner": _owner_view(previous),
        }

    return await gate.run(transfer)


@router.get("/{name}/history", dependencies=[Depends(require_read_token)])
async def model_history(
    name: ModelName,
    limit: int = Query(100, ge=1, le=1000),
    session: Session = Depends(get_session),
    client: MlflowClient = Depends(registry),
    gate: RegistryGate = Depends(registry_gate),
) -> list[dict[str, Any]]:
    """Every change of the served version, newest first (kept even after a purge)."""

    def read() -> list[dict[str, Any]]:
        rows = deployment_history(session, name, limit)
        if not rows and not model_exists(client, name):
            raise HTTPException(404, f"model {name!r} is not registered and has no history")
        return [
            {
                "id": row.id,
                "action": row.action,
                "version": row.version,
                "previous_version": row.previous_version,
                "pipeline_id": row.pipeline_id,
                "actor": row.actor,
                "created_at": _iso(row.created_at),
            }
            for row in rows
        ]

    return await gate.run(read)


def _iso(value: datetime) -> str:
    return as_utc(value).isoformat()  # type: ignore[union-attr]


def _change(
    session: Session,
    client: MlflowClient,
    settings: Settings,
    *,
    name: str,
    version: str | None,
    action: DeploymentAction,
) -> dict[str, Any]:
    pipeline_id = None
    if version is not None:
        pipeline_id = get_version(client, name, version).pipeline_id
    previous, announced = change_served_version(
        session,
        client,
        _redis(settings.redis_url),
        model_name=name,
        version=version,
        action=action,
        alias=settings.serving_alias,
        actor=API_ACTOR,
        pipeline_id=pipeline_id,
    )
    logger.info("%s %s: served version %s -> %s", action, name, previous, version)
    return {
        "name": name,
        "action": action,
        "served_version": version,
        "previous_version": previous,
        "announced": announced,
    }


@router.post("/{name}/deploy", dependencies=[Depends(require_api_token)])
async def deploy(
    name: ModelName,
    choice: VersionChoice,
    session: Session = Depends(get_session),
    settings: Settings = Depends(get_app_settings),
    client: MlflowClient = Depends(registry),
    gate: RegistryGate = Depends(registry_gate),
) -> dict[str, Any]:
    """Serve any registered version of the model."""
    version = choice.version
    if version is None:
        raise HTTPException(422, "version is required: the registered version to serve")

    def change() -> dict[str, Any]:
        _require_version(client, name, version)
        return _change(
            session, client, settings, name=name, version=version, action=DeploymentAction.DEPLOY
        )

    return await gate.run(change)


@router.post("/{name}/rollback", dependencies=[Depends(require_api_token)])
async def rollback(
    name: ModelName,
    choice: VersionChoice | None = None,
    session: Session = Depends(get_session),
    settings: Settings = Depends(get_app_settings),
    client: MlflowClient = Depends(registry),
    gate: RegistryGate = Depends(registry_gate),
) -> dict[str, Any]:
    """Serve `version`, or without one the version served before the current one."""

    def change() -> dict[str, Any]:
        _require_model(client, name)
        target = choice.version if choice else None
        if target is None:
            current = served_version(client, name, settings.serving_alias)
            target = previously_served_version(session, name, current)
            if target is None:
                raise HTTPException(
                    409, f"model {name!r} has no previously served version to roll back to"
                )
        _require_version(client, name, target)
        return _change(
            session, client, settings, name=name, version=target, action=DeploymentAction.ROLLBACK
        )

    return await gate.run(change)


@router.delete("/{name}", dependencies=[Depends(require_api_token)])
async def delete(
    name: ModelName,
    purge: bool = Query(False, description="also delete the registered model and its versions"),
    session: Session = Depends(get_session),
    settings: Settings = Depends(get_app_settings),
    client: MlflowClient = Depends(registry),
    gate: RegistryGate = Depends(registry_gate),
) -> dict[str, Any]:
    """Stop serving the model; with `purge=true` also remove it from the registry."""

    def change() -> dict[str, Any]:
        _require_model(client, name)
        result = _change(
            session, client, settings, name=name, version=None, action=DeploymentAction.DELETE
        )
        if purge:
            try:
                delete_model(client, name)
            except MlflowException as exc:
                raise HTTPException(
                    502, f"model {name!r} stopped serving but purge failed: {exc}"
                ) from None
        result["purged"] = purge
        return result

    return await gate.run(change)


@router.post(
    "/{name}/predict",
    dependencies=[Depends(require_predict_token)],
    openapi_extra=PREDICT_REQUEST_BODY,
)
async def predict(name: ModelName, request: Request) -> Response:
    """Forward a prediction to a model-server replica, same body in, same status and body out."""
    settings: Settings = request.app.state.settings
    body = await _limited_body(request, settings.predict_max_body_bytes)
    forwarder: ModelForwarder = request.app.state.model_forwarder
    path = f"/predict/{quote(name, safe='')}"
    upstream = await forwarder.post(path, body, _forward_headers(settings))
    if upstream.status_code == 401:
        # The caller passed this backend's guard; the backend's own token is what is wrong.
        replica = str(upstream.request.url).removesuffix(path)
        raise HTTPException(
            502,
            f"the model server at {replica} refused the backend's prediction "
            "call: give the backend and the model servers the same PREDICT_TOKEN",
        )
    return Response(
        content=upstream.content,
        status_code=upstream.status_code,
        media_type=upstream.headers.get("content-type", "application/json"),
    )


def _forward_headers(settings: Settings) -> dict[str, str]:
    """JSON, and the backend's own PREDICT_TOKEN: the caller's token is never passed on."""
    headers = {"content-type": "application/json"}
    token = configured(settings, PREDICT)
    if token is not None:
        headers["authorization"] = f"Bearer {token}"
    return headers


async def _limited_body(request: Request, limit: int) -> bytes:
    try:
        return await read_capped_body(request, limit, "PREDICT_MAX_BODY_BYTES")
    except BodyTooLarge as exc:
        raise HTTPException(413, str(exc)) from None
