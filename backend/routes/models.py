"""Models API: what is served, every registered version, deploy / rollback / delete, predict.

The routes translate HTTP to backend/model_service.py, run its blocking work on the registry
gate's own threads (backend/registry_gate.py: bounded, behind a circuit breaker), never on the
thread pool that webhook intake and pipeline reads use, and map its errors to status codes in
one place. The prediction proxy is async (backend/model_forwarder.py) and streams nothing it
has not size-checked.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Annotated, Any, Final, TypeVar
from urllib.parse import quote

from fastapi import APIRouter, Depends, HTTPException, Query, Request, Response
from pydantic import BaseModel, Field, field_validator

from backend.api_params import INT64_MAX, ModelName, RowId
from backend.auth import (
    ActorDep,
    require_api_token,
    require_predict_token,
    require_read_token,
)
from backend.dependencies import (
    ForwarderDep,
    GateDep,
    RedisDep,
    RegistryDep,
    SessionDep,
    SettingsDep,
)
from backend.deploy_confirmation import MAX_REASON_LENGTH, GateNotConfirmed
from backend.model_service import ModelNotFound, ModelService, NothingToRollBack, PurgeFailed
from backend.model_views import (
    DeploymentResult,
    HistoryEntry,
    ModelDetail,
    ModelSummary,
    OwnerTransfer,
)
from backend.registry_gate import RegistryGate
from backend.version_comparison import VersionComparison
from mlops_core.access_tokens import PREDICT, configured
from mlops_core.prediction_log import REQUEST_ID_HEADER
from mlops_core.prediction_schema import PREDICT_REQUEST_BODY
from mlops_core.request_limits import BodyTooLarge, read_capped_body
from mlops_core.settings import Settings

router = APIRouter(prefix="/models", tags=["models"])

T = TypeVar("T")

# The one mapping from the service's errors to HTTP.
_STATUS: Final[dict[type[Exception], int]] = {
    ModelNotFound: 404,
    NothingToRollBack: 409,
    PurgeFailed: 502,
    GateNotConfirmed: 409,
}


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


class ReasonChoice(BaseModel):
    """Body of delete: why (optional, kept in the deployment history)."""

    reason: str | None = Field(default=None, max_length=MAX_REASON_LENGTH)


class RollbackChoice(VersionChoice, ReasonChoice):
    """Body of rollback: the version (default: the one served before) and why."""


class DeployChoice(RollbackChoice):
    """Body of deploy: a version below its gate also needs `force` and a `reason`."""

    force: bool = False


class OwnerChoice(BaseModel):
    """Body of an owner transfer: the registered repository (and which of its notebooks; default
    its first) that gets the model name."""

    repo_id: RowId
    notebook_path: str | None = Field(default=None, min_length=1, max_length=500)


def model_service(
    settings: SettingsDep, registry: RegistryDep, announcer: RedisDep, session: SessionDep
) -> ModelService:
    return ModelService(settings, registry, announcer, session)


ServiceDep = Annotated[ModelService, Depends(model_service)]


async def _on_gate(gate: RegistryGate, work: Callable[[], T]) -> T:
    """Run the service's work on a registry thread; its errors become their status codes."""
    try:
        return await gate.run(work)
    except tuple(_STATUS) as exc:
        raise HTTPException(_STATUS[type(exc)], str(exc)) from None


@router.get("", dependencies=[Depends(require_read_token)])
async def list_models(service: ServiceDep, gate: GateDep) -> list[ModelSummary]:
    """Every registered model with its served version and its versions."""
    return await _on_gate(gate, service.summaries)


@router.get("/{name}", dependencies=[Depends(require_read_token)])
async def get_model(name: ModelName, service: ServiceDep, gate: GateDep) -> ModelDetail:
    """One model, plus which version each live model-server replica has loaded, the
    feature names of the served (else newest) version and the repository owning the name."""
    return await _on_gate(gate, lambda: service.detail(name))


@router.post("/{name}/owner", dependencies=[Depends(require_api_token)])
async def transfer_owner(
    name: ModelName, choice: OwnerChoice, service: ServiceDep, gate: GateDep
) -> OwnerTransfer:
    """Give the model name to a repository and its notebook: from then on only that repo's
    pipelines may publish versions of it (the previous owner's fail their validate phase)."""
    return await _on_gate(
        gate, lambda: service.transfer_owner(name, choice.repo_id, choice.notebook_path)
    )


@router.get("/{name}/history", dependencies=[Depends(require_read_token)])
async def model_history(
    name: ModelName,
    service: ServiceDep,
    gate: GateDep,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[HistoryEntry]:
    """Every change of the served version, newest first (kept even after a purge)."""
    return await _on_gate(gate, lambda: service.history(name, limit))


@router.get("/{name}/compare", dependencies=[Depends(require_read_token)])
async def compare_versions(
    name: ModelName,
    service: ServiceDep,
    gate: GateDep,
    a: Annotated[str, Query(description="a registered version number")],
    b: Annotated[str, Query(description="another registered version number")],
) -> VersionComparison:
    """Two versions side by side: parameters, metrics, commit and the data of their runs, each
    row saying whether they differ."""
    first, second = _version_number("a", a), _version_number("b", b)
    return await _on_gate(gate, lambda: service.compare(name, first, second))


@router.post("/{name}/deploy", dependencies=[Depends(require_api_token)])
async def deploy(
    name: ModelName, choice: DeployChoice, service: ServiceDep, gate: GateDep, actor: ActorDep
) -> DeploymentResult:
    """Serve any registered version of the model (one below its gate: with force and reason)."""
    version = choice.version
    if version is None:
        raise HTTPException(422, "version is required: the registered version to serve")
    return await _on_gate(
        gate,
        lambda: service.deploy(
            name, version, actor=actor, force=choice.force, reason=choice.reason
        ),
    )


@router.post("/{name}/rollback", dependencies=[Depends(require_api_token)])
async def rollback(
    name: ModelName,
    service: ServiceDep,
    gate: GateDep,
    actor: ActorDep,
    choice: RollbackChoice | None = None,
) -> DeploymentResult:
    """Serve `version`, or without one the version served before the current one."""
    target = choice.version if choice else None
    reason = choice.reason if choice else None
    return await _on_gate(gate, lambda: service.rollback(name, target, actor=actor, reason=reason))


@router.delete("/{name}", dependencies=[Depends(require_api_token)])
async def delete(
    name: ModelName,
    service: ServiceDep,
    gate: GateDep,
    actor: ActorDep,
    purge: Annotated[
        bool, Query(description="also delete the registered model and its versions")
    ] = False,
    choice: ReasonChoice | None = None,
) -> DeploymentResult:
    """Stop serving the model; with `purge=true` also remove it from the registry."""
    reason = choice.reason if choice else None
    return await _on_gate(
        gate, lambda: service.stop_serving(name, purge=purge, actor=actor, reason=reason)
    )


@router.post(
    "/{name}/predict",
    dependencies=[Depends(require_predict_token)],
    openapi_extra=PREDICT_REQUEST_BODY,
)
async def predict(
    name: ModelName, request: Request, settings: SettingsDep, forwarder: ForwarderDep
) -> Response:
    """Forward a prediction to a model-server replica, same body in, same status and body out."""
    body = await _limited_body(request, settings.predict_max_body_bytes)
    path = f"/predict/{quote(name, safe='')}"
    upstream = await forwarder.post(path, body, _forward_headers(settings, request.headers))
    if upstream.status_code == 401:
        # The caller passed this backend's guard; the backend's own token is what is wrong.
        replica = str(upstream.request.url).removesuffix(path)
        raise HTTPException(
            502,
            f"the model server at {replica} refused the backend's prediction "
            "call: give the backend and the model servers the same PREDICT_TOKEN",
        )
    request_id = upstream.headers.get(REQUEST_ID_HEADER)
    return Response(
        content=upstream.content,
        status_code=upstream.status_code,
        media_type=upstream.headers.get("content-type", "application/json"),
        headers={REQUEST_ID_HEADER: request_id} if request_id else None,
    )


def _version_number(field: str, value: str) -> str:
    """A query's version number, checked as a body's is (VersionChoice); 422 naming the field."""
    try:
        checked = VersionChoice(version=value).version
    except ValueError:
        raise HTTPException(
            422, f'{field} must be a registered version number such as "3", not {value!r}'
        ) from None
    assert checked is not None
    return checked


def _forward_headers(settings: Settings, given: Mapping[str, str]) -> dict[str, str]:
    """JSON, the backend's own PREDICT_TOKEN (the caller's token is never passed on), and the
    caller's `X-` headers: X-Request-ID names the request in the prediction log, and a canary's
    sticky key may be a header (X-User-Id). X-Forwarded-* describe this hop, not the caller's
    request, and are left out."""
    headers = {
        key: value
        for key, value in given.items()
        if key.lower().startswith("x-") and not key.lower().startswith("x-forwarded-")
    }
    headers["content-type"] = "application/json"
    token = configured(settings, PREDICT)
    if token is not None:
        headers["authorization"] = f"Bearer {token}"
    return headers


async def _limited_body(request: Request, limit: int) -> bytes:
    try:
        return await read_capped_body(request, limit, "PREDICT_MAX_BODY_BYTES")
    except BodyTooLarge as exc:
        raise HTTPException(413, str(exc)) from None
