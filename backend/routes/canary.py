"""Canary API: run a challenger beside the served version, watch both live, promote or abort.

The routes translate HTTP to backend/canary_service.py, run its blocking work on the registry
gate's threads, and map its errors to status codes in one table.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Final, TypeVar

from fastapi import APIRouter, Depends, HTTPException

from backend.api_params import ModelName
from backend.auth import ActorDep, require_api_token, require_read_token
from backend.canary_service import CanaryService
from backend.canary_views import CanaryOutcome, CanaryRequest, CanaryStatus
from backend.dependencies import GateDep, RedisDep, RegistryDep, SessionDep, SettingsDep
from backend.model_service import ModelNotFound
from backend.registry_gate import RegistryGate
from mlops_core.deployments import CanaryRefused, NoCanary

router = APIRouter(prefix="/models", tags=["canary"])

T = TypeVar("T")

_STATUS: Final[dict[type[Exception], int]] = {
    ModelNotFound: 404,
    CanaryRefused: 409,
    NoCanary: 409,
}


def canary_service(
    settings: SettingsDep, registry: RegistryDep, announcer: RedisDep, session: SessionDep
) -> CanaryService:
    return CanaryService(settings, registry, announcer, session)


ServiceDep = Annotated[CanaryService, Depends(canary_service)]


async def _on_gate(gate: RegistryGate, work: Callable[[], T]) -> T:
    try:
        return await gate.run(work)
    except tuple(_STATUS) as exc:
        raise HTTPException(_STATUS[type(exc)], str(exc)) from None


@router.post("/{name}/canary", dependencies=[Depends(require_api_token)])
async def start_canary(
    name: ModelName, body: CanaryRequest, service: ServiceDep, gate: GateDep, actor: ActorDep
) -> CanaryStatus:
    """Run `version` as the challenger: it answers (`split`) or gets a copy of (`shadow`)
    `weight`% of requests, chosen by a hash of the sticky key when given. Starting again
    changes the running canary (a new version replaces the challenger)."""
    return await _on_gate(
        gate,
        lambda: service.start(
            name,
            body.version,
            weight=body.weight,
            mode=body.mode,
            sticky_key=body.sticky_key,
            actor=actor,
        ),
    )


@router.get("/{name}/canary", dependencies=[Depends(require_read_token)])
async def get_canary(name: ModelName, service: ServiceDep, gate: GateDep) -> CanaryStatus:
    """The running canary, both versions' live figures since it started, and what the
    promotion policy would decide on them (`active: false` when none runs)."""
    return await _on_gate(gate, lambda: service.status(name))


@router.post("/{name}/canary/promote", dependencies=[Depends(require_api_token)])
async def promote_canary(
    name: ModelName, service: ServiceDep, gate: GateDep, actor: ActorDep
) -> CanaryOutcome:
    """Serve the challenger to everyone (it becomes the served version)."""
    return await _on_gate(gate, lambda: service.promote(name, actor=actor))


@router.post("/{name}/canary/abort", dependencies=[Depends(require_api_token)])
async def abort_canary(
    name: ModelName, service: ServiceDep, gate: GateDep, actor: ActorDep
) -> CanaryOutcome:
    """Stop the challenger: the served version answers every request again."""
    return await _on_gate(gate, lambda: service.abort(name, actor=actor))
