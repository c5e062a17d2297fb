"""The live figures of a canary's two versions, from the prediction log, since it started.

What the promotion policy (mlops_core/canary_policy.py) and the canary panel compare: per
version, the requests and failed requests, p50/p95 latency, live quality from feedback and the
share of drifted features; in shadow mode also how often the challenger's answer to a copy
agreed with the champion's answer to the same request. The champion's figures are its answers
to callers; the challenger's are its answers to callers in `split` mode and its answers to the
copies (the log's shadow rows) in `shadow` mode.
"""

from __future__ import annotations

import math
import time
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import aliased

from backend.drift import check as drift_check
from backend.live_quality import quality_since
from backend.serving_stats import MAX_ROWS, latency_since
from mlops_core.canary import CanaryConfig, CanaryMode
from mlops_core.canary_policy import Evidence, VersionFigures
from mlops_core.database import session_scope
from mlops_core.schema import PredictionLogRow
from mlops_core.settings import Settings


def gather(
    settings: Settings, model: str, champion: str, canary: CanaryConfig, now: float | None = None
) -> Evidence:
    """Both versions' figures since `canary.started_at`."""
    since = datetime.fromtimestamp(canary.started_at, UTC)
    shadow = canary.mode == CanaryMode.SHADOW
    agreement, compared = (None, 0)
    if shadow:
        agreement, compared = shadow_agreement(
            settings.database_url, model, champion, canary.version, since
        )
    return Evidence(
        champion=figures(settings, model, champion, since, shadow=False),
        challenger=figures(settings, model, canary.version, since, shadow=shadow),
        elapsed_seconds=max(0.0, (now if now is not None else time.time()) - canary.started_at),
        agreement=agreement,
        compared=compared,
    )


def figures(
    settings: Settings, model: str, version: str, since: datetime, *, shadow: bool
) -> VersionFigures:
    """One version's figures; `shadow`: from its answers to copies rather than to callers."""
    latency = latency_since(settings.database_url, model, version, since, shadow=shadow)
    quality = quality_since(settings.database_url, model, version, since, shadow=shadow)
    drift = drift_check(settings, model, version)
    return VersionFigures(
        version=version,
        requests=latency.requests,
        errors=latency.error_count,
        p50_ms=latency.p50_ms,
        p95_ms=latency.p95_ms,
        quality_metric=quality.metric if quality else None,
        quality=quality.value if quality else None,
        quality_rows=quality.rows if quality else 0,
        drift_share=drift.report.share_drifted if drift.report is not None else None,
    )


def shadow_agreement(
    database_url: str, model: str, champion: str, challenger: str, since: datetime
) -> tuple[float | None, int]:
    """Share of rows where the shadow challenger's answer equals the champion's for the same
    request, and how many rows were compared (None while none was)."""
    answered, copied = aliased(PredictionLogRow), aliased(PredictionLogRow)
    with session_scope(database_url) as session:
        pairs = session.execute(
            select(answered.predictions, copied.predictions)
            .join(
                copied,
                (copied.model_name == answered.model_name)
                & (copied.request_id == answered.request_id),
            )
            .where(answered.model_name == model)
            .where(answered.model_version == champion)
            .where(answered.shadow.is_(False))
            .where(copied.model_version == challenger)
            .where(copied.shadow.is_(True))
            .where(copied.at >= since)
            .limit(MAX_ROWS)
        ).all()
    rows = agree = 0
    for mine, theirs in pairs:
        for a, b in zip(mine, theirs, strict=False):
            rows += 1
            agree += _same(a, b)
    return (agree / rows if rows else None), rows


def _same(a: Any, b: Any) -> bool:
    """Labels by value across JSON types; numbers within float noise."""
    numbers = (int, float)
    if isinstance(a, numbers) and isinstance(b, numbers):
        return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)
    return a == b or str(a) == str(b)
