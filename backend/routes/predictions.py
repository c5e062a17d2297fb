"""The prediction log over HTTP: one model's predictions, and every model's (seed 004's history).

Records arrive from the model servers through the stream the backend stores
(backend/prediction_store.py), so a prediction shows up here within about a second. The
predictions endpoints list answered predictions only; failed requests to a served version are
counted per version and bucket by `/models/{name}/traffic` (the model page's error rate).
"""

from __future__ import annotations

import csv
import io
import json
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Response
from pydantic import BaseModel, Field, model_validator

from backend.api_params import INT64_MAX, ModelName
from backend.auth import require_api_token, require_read_token
from backend.dependencies import SettingsDep
from backend.live_quality import live_quality, record_feedback
from backend.prediction_store import query
from backend.serving_stats import Latency, traffic
from mlops_core.schema import PredictionLogRow
from mlops_core.settings import Settings

router = APIRouter(tags=["predictions"])
MAX_FEEDBACK_ITEMS = 10_000
# Labelled rows live quality is computed over unless the caller says otherwise.
DEFAULT_WINDOW = 1000

MAX_PAGE_SIZE = 500
MAX_EXPORT_ROWS = 100_000
MAX_PAGE = INT64_MAX // MAX_EXPORT_ROWS
CSV_COLUMNS = (
    "request_id",
    "at",
    "model",
    "version",
    "commit",
    "replica",
    "latency_ms",
    "inputs",
    "predictions",
    "probabilities",
    "shadow",
)


class PredictionEntry(BaseModel):
    request_id: str
    at: datetime
    model: str
    version: str
    commit: str | None
    replica: str
    inputs: list[dict[str, Any]]
    predictions: list[Any]
    probabilities: list[list[float]] | None
    latency_ms: float
    # A shadow challenger's answer to a copy of this request (never returned to the caller).
    shadow: bool = False


class PredictionPage(BaseModel):
    items: list[PredictionEntry]
    total: int
    page: int
    size: int


def _entry(row: PredictionLogRow) -> PredictionEntry:
    return PredictionEntry(
        request_id=row.request_id,
        at=row.at,
        model=row.model_name,
        version=row.model_version,
        commit=row.commit_sha,
        replica=row.replica,
        inputs=row.inputs,
        predictions=row.predictions,
        probabilities=row.probabilities,
        latency_ms=row.latency_ms,
        shadow=row.shadow,
    )


class Filters(BaseModel):
    version: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    page: int = 1
    size: int = 50
    format: Literal["json", "csv"] = "json"


def _filters(
    version: Annotated[str | None, Query(max_length=50)] = None,
    since: datetime | None = None,
    until: datetime | None = None,
    page: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 1,
    size: Annotated[int, Query(ge=1, le=MAX_EXPORT_ROWS)] = 50,
    format: Literal["json", "csv"] = "json",
) -> Filters:
    return Filters(version=version, since=since, until=until, page=page, size=size, format=format)


def _answer(settings: Settings, model: str | None, filters: Filters) -> PredictionPage | Response:
    size = filters.size if filters.format == "csv" else min(filters.size, MAX_PAGE_SIZE)
    found = query(
        settings.database_url,
        model=model,
        version=filters.version,
        since=filters.since,
        until=filters.until,
        page=filters.page,
        size=size,
    )
    entries = [_entry(row) for row in found.items]
    if filters.format == "csv":
        return Response(
            _csv(entries),
            media_type="text/csv",
            headers={"Content-Disposition": 'attachment; filename="predictions.csv"'},
        )
    return PredictionPage(items=entries, total=found.total, page=filters.page, size=size)


def _csv(entries: list[PredictionEntry]) -> str:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(CSV_COLUMNS)
    for entry in entries:
        writer.writerow(
            (
                entry.request_id,
                entry.at.isoformat(),
                entry.model,
                entry.version,
                entry.commit or "",
                entry.replica,
                entry.latency_ms,
                json.dumps(entry.inputs),
                json.dumps(entry.predictions),
                json.dumps(entry.probabilities) if entry.probabilities is not None else "",
                "true" if entry.shadow else "false",
            )
        )
    return out.getvalue()


@router.get(
    "/models/{name}/predictions",
    response_model=PredictionPage,
    dependencies=[Depends(require_read_token)],
)
def model_predictions(
    name: ModelName, settings: SettingsDep, filters: Annotated[Filters, Depends(_filters)]
) -> PredictionPage | Response:
    """This model's logged predictions, newest first (`format=csv` to export)."""
    return _answer(settings, name, filters)


@router.get(
    "/predictions/history",
    response_model=PredictionPage,
    dependencies=[Depends(require_read_token)],
)
def prediction_history(
    settings: SettingsDep,
    filters: Annotated[Filters, Depends(_filters)],
    model: ModelName | None = None,
) -> PredictionPage | Response:
    """Every model's logged predictions, newest first (`format=csv` to export)."""
    return _answer(settings, model, filters)


class FeedbackItem(BaseModel):
    request_id: str = Field(min_length=1, max_length=200)
    # One label per row of the request: a value for a one-row request, else a list.
    label: Any


class FeedbackBody(BaseModel):
    """`{"request_id": ..., "label": ...}` for one request, or `{"items": [...]}` for many."""

    request_id: str | None = Field(default=None, min_length=1, max_length=200)
    label: Any = None
    items: list[FeedbackItem] | None = Field(default=None, max_length=MAX_FEEDBACK_ITEMS)

    @model_validator(mode="after")
    def _one_form(self) -> FeedbackBody:
        if (self.items is None) == (self.request_id is None):
            raise ValueError('send either "request_id" and "label", or "items"')
        if self.request_id is not None and self.label is None:
            raise ValueError('"label" is required with "request_id"')
        return self

    def pairs(self) -> list[tuple[str, Any]]:
        if self.items is not None:
            return [(item.request_id, item.label) for item in self.items]
        assert self.request_id is not None
        return [(self.request_id, self.label)]


class FeedbackAnswer(BaseModel):
    accepted: int
    # Request ids with no logged prediction of this model (not stored: check the id or the
    # model; a prediction shows up in the log about a second after it was answered).
    unknown: list[str]
    rejected: dict[str, str]


class VersionQualityEntry(BaseModel):
    version: str
    metric: str
    value: float
    rows: int


class QualityAnswer(BaseModel):
    model: str
    window: int
    versions: list[VersionQualityEntry]


@router.post(
    "/models/{name}/feedback",
    response_model=FeedbackAnswer,
    dependencies=[Depends(require_api_token)],
)
def post_feedback(name: ModelName, body: FeedbackBody, settings: SettingsDep) -> FeedbackAnswer:
    """Ground truth for logged predictions, matched by request id."""
    outcome = record_feedback(settings.database_url, name, body.pairs())
    live_quality(settings.database_url, name, DEFAULT_WINDOW)
    return FeedbackAnswer(
        accepted=outcome.accepted, unknown=outcome.unknown, rejected=outcome.rejected
    )


@router.get(
    "/models/{name}/quality",
    response_model=QualityAnswer,
    dependencies=[Depends(require_read_token)],
)
def get_quality(
    name: ModelName,
    settings: SettingsDep,
    window: Annotated[int, Query(ge=1, le=1_000_000)] = DEFAULT_WINDOW,
) -> QualityAnswer:
    """Live quality per version over the `window` most recent labelled rows."""
    found = live_quality(settings.database_url, name, window)
    return QualityAnswer(
        model=name,
        window=window,
        versions=[
            VersionQualityEntry(version=q.version, metric=q.metric, value=q.value, rows=q.rows)
            for q in found
        ],
    )


class LatencyEntry(BaseModel):
    # Answered predictions, and their latency (null when none was answered).
    requests: int
    p50_ms: float | None
    p95_ms: float | None
    # Failed requests to a served version, by reason; error_rate = errors / (requests + errors).
    errors: int
    error_rate: float
    error_reasons: dict[str, int]


def _latency_entry(latency: Latency) -> LatencyEntry:
    return LatencyEntry(
        requests=latency.requests,
        p50_ms=latency.p50_ms,
        p95_ms=latency.p95_ms,
        errors=latency.error_count,
        error_rate=latency.error_rate,
        error_reasons=latency.errors,
    )


class TrafficBucket(LatencyEntry):
    start: datetime
    version: str


class TrafficAnswer(BaseModel):
    model: str
    since: datetime
    bucket_seconds: int
    buckets: list[TrafficBucket]
    versions: dict[str, LatencyEntry]


@router.get(
    "/models/{name}/traffic",
    response_model=TrafficAnswer,
    dependencies=[Depends(require_read_token)],
)
def get_traffic(
    name: ModelName,
    settings: SettingsDep,
    hours: Annotated[int, Query(ge=1, le=24 * 90)] = 24,
    buckets: Annotated[int, Query(ge=1, le=500)] = 48,
) -> TrafficAnswer:
    """Logged requests, latency percentiles and errors per version over time (the model page's
    charts and error rate)."""
    found = traffic(settings.database_url, name, hours=hours, buckets=buckets)
    return TrafficAnswer(
        model=name,
        since=found.since,
        bucket_seconds=found.bucket_seconds,
        buckets=[
            TrafficBucket(
                start=b.start, version=b.version, **_latency_entry(b.latency).model_dump()
            )
            for b in found.buckets
        ],
        versions={version: _latency_entry(latency) for version, latency in found.versions.items()},
    )
