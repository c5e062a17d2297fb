"""The model server's guard: PREDICT_TOKEN (or the admin API_TOKEN) on everything about models.

Predictions (every protocol's: the data plane checks them, model_server/data_plane.py), the model
list and the Open Inference Protocol's per-model calls (metadata, ready) all need it: an
inference client fetches a model's metadata with the credentials it infers with, and a model's
name and inputs are nobody else's business. The probes (/health, /ready, /v2, /v2/health/live,
/v2/health/ready, MLflow's /ping and /version) stay open for orchestrators and load balancers.
"""

from __future__ import annotations

import logging

from fastapi import HTTPException, Request, status

from mlops_core.access_tokens import (
    CHALLENGE,
    METRICS,
    PREDICT,
    bearer_token,
    open_warning,
    refusal,
)
from mlops_core.settings import Settings

log = logging.getLogger("model_server")


def require_predict_token(request: Request) -> None:
    """FastAPI dependency: 401 naming the token to send, unless the request carries it."""
    presented = bearer_token(request.headers.get("authorization"))
    refused = refusal(request.app.state.settings, PREDICT, presented)
    if refused is not None:
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, refused.http_detail, headers=CHALLENGE)


def require_metrics_token(request: Request) -> None:
    """FastAPI dependency for /metrics: METRICS_TOKEN (or API_TOKEN) when set, else open."""
    presented = bearer_token(request.headers.get("authorization"))
    refused = refusal(request.app.state.settings, METRICS, presented)
    if refused is not None:
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, refused.http_detail, headers=CHALLENGE)


def warn_if_open(settings: Settings) -> None:
    """Log, at start, that anyone reaching this server may predict when PREDICT_TOKEN is unset."""
    warning = open_warning(settings, (PREDICT,), "this model server")
    if warning is not None:
        log.warning(warning)
