"""Data drift over HTTP: one model's drift report, and every model's (seed 001's /drift-status)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Query
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool

from backend.api_params import ModelName
from backend.auth import require_read_token
from backend.dependencies import SettingsDep
from backend.drift import VersionDrift, check, latest_versions

router = APIRouter(tags=["drift"], dependencies=[Depends(require_read_token)])


class HistogramEntry(BaseModel):
    """Shares of each side's rows per bin (numeric ranges, or the commonest values)."""

    bins: list[str]
    reference: list[float]
    current: list[float]


class FeatureDriftEntry(BaseModel):
    method: str
    statistic: float
    p_value: float | None
    distance: float | None
    drifted: bool
    histogram: HistogramEntry | None


class ReferenceSide(BaseModel):
    source: str  # "training" or "first_predictions"
    rows: int


class CurrentSide(BaseModel):
    rows: int
    since: datetime | None


class DriftAnswer(BaseModel):
    model: str
    version: str
    # Some feature drifted / at least half of them did (Evidently's dataset rule); both null
    # while there are too few rows to tell, with `detail` saying how many are missing.
    drift_detected: bool | None
    dataset_drift: bool | None
    drifted_features: list[str]
    share_drifted: float | None
    reference: ReferenceSide
    current: CurrentSide
    features: dict[str, FeatureDriftEntry]
    detail: str | None


class DriftStatus(BaseModel):
    models: list[DriftAnswer]


def _answer(found: VersionDrift) -> DriftAnswer:
    report = found.report
    return DriftAnswer(
        model=found.model,
        version=found.version,
        drift_detected=report.drift_detected if report else None,
        dataset_drift=report.dataset_drift if report else None,
        drifted_features=report.drifted_features if report else [],
        share_drifted=report.share_drifted if report else None,
        reference=ReferenceSide(source=found.reference_source, rows=found.reference_rows),
        current=CurrentSide(rows=found.current_rows, since=found.current_since),
        features={
            name: FeatureDriftEntry(
                method=result.method,
                statistic=result.statistic,
                p_value=result.p_value,
                distance=result.distance,
                drifted=result.drifted,
                histogram=(
                    HistogramEntry(
                        bins=report.histograms[name].bins,
                        reference=report.histograms[name].reference,
                        current=report.histograms[name].current,
                    )
                    if report is not None and name in report.histograms
                    else None
                ),
            )
            for name, result in (report.features.items() if report else ())
        },
        detail=found.reason,
    )


@router.get("/models/{name}/drift", response_model=DriftAnswer)
async def model_drift(
    name: ModelName,
    settings: SettingsDep,
    version: Annotated[str | None, Query(max_length=50)] = None,
) -> DriftAnswer:
    """Drift of a version (default: the one that answered last) from its reference."""
    if version is None:
        version = (await run_in_threadpool(latest_versions, settings.database_url)).get(name)
        if version is None:
            raise HTTPException(404, f"model {name!r} has no logged prediction to measure")
    return _answer(await run_in_threadpool(check, settings, name, version))


@router.get("/drift-status", response_model=DriftStatus)
async def drift_status(settings: SettingsDep) -> DriftStatus:
    """Drift of every model's currently answering version."""
    versions = await run_in_threadpool(latest_versions, settings.database_url)
    return DriftStatus(
        models=[
            _answer(await run_in_threadpool(check, settings, name, version))
            for name, version in sorted(versions.items())
        ]
    )
