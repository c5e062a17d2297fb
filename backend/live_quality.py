"""Live quality: ground truth sent after the fact, matched to logged predictions, per version.

Transport-free: the routes call these functions. A label is matched to a prediction by the
request id the model server logged (the caller's X-Request-ID, or the id it returned). Live
quality is computed over the most recent labelled rows (a window), per version, as accuracy for
classifiers (the logged answer carried probabilities, or its predictions are not numbers) and
MAE/RMSE otherwise, and exported as `ml_live_metric{model,version,metric}`.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import select

from backend.metrics import LIVE_METRIC
from mlops_core.database import session_scope
from mlops_core.schema import PredictionFeedback, PredictionLogRow


@dataclass(frozen=True)
class FeedbackOutcome:
    accepted: int
    unknown: list[str] = field(default_factory=list)  # no logged prediction of this model
    rejected: dict[str, str] = field(default_factory=dict)  # request id → why


@dataclass(frozen=True)
class VersionQuality:
    version: str
    metric: str
    value: float
    rows: int


def record_feedback(
    database_url: str, model: str, items: Sequence[tuple[str, Any]]
) -> FeedbackOutcome:
    """Store (request id, label) pairs; a label is one value per row, or a list of them."""
    ids = list(dict.fromkeys(request_id for request_id, _ in items))
    with session_scope(database_url) as session:
        logged = {
            row.request_id: row
            for row in session.scalars(
                select(PredictionLogRow)
                .where(PredictionLogRow.model_name == model)
                .where(PredictionLogRow.request_id.in_(ids))
                .order_by(PredictionLogRow.at)
            )
        }
        accepted, unknown, rejected = 0, [], {}  # type: ignore[var-annotated]
        for request_id, label in items:
            row = logged.get(request_id)
            if row is None:
                unknown.append(request_id)
                continue
            labels = label if isinstance(label, list) else [label]
            if len(labels) != len(row.predictions):
                rejected[request_id] = (
                    f"{len(labels)} label(s) for a request of {len(row.predictions)} row(s)"
                )
                continue
            session.merge(
                PredictionFeedback(model_name=model, request_id=request_id, labels=labels)
            )
            accepted += 1
    return FeedbackOutcome(accepted, unknown, rejected)


def live_quality(database_url: str, model: str, window: int) -> list[VersionQuality]:
    """Quality per version over the `window` most recent labelled rows; updates the gauge."""
    with session_scope(database_url) as session:
        pairs = session.execute(
            select(PredictionLogRow, PredictionFeedback)
            .join(
                PredictionFeedback,
                (PredictionFeedback.model_name == PredictionLogRow.model_name)
                & (PredictionFeedback.request_id == PredictionLogRow.request_id),
            )
            .where(PredictionLogRow.model_name == model)
            .order_by(PredictionLogRow.at.desc())
        )
        by_version: dict[str, list[tuple[Any, Any]]] = defaultdict(list)
        classifier: dict[str, bool] = {}
        rows = 0
        for logged, feedback in pairs:
            if rows >= window:
                break
            version = logged.model_version
            by_version[version].extend(zip(logged.predictions, feedback.labels, strict=False))
            classifier[version] = classifier.get(version, False) or _is_classification(logged)
            rows += len(feedback.labels)
    results: list[VersionQuality] = []
    for version, matched in sorted(by_version.items()):
        for metric, value in _metrics(matched, classifier[version]).items():
            LIVE_METRIC.labels(model, version, metric).set(value)
            results.append(VersionQuality(version, metric, value, len(matched)))
    return results


def quality_since(
    database_url: str, model: str, version: str, since: datetime, *, shadow: bool
) -> VersionQuality | None:
    """One version's live quality over its labelled answers logged since `since` (its shadow
    answers with `shadow`: feedback names a request, and both versions answered it), or None
    when none is labelled yet. The canary comparison's: no gauge is updated."""
    with session_scope(database_url) as session:
        pairs = session.execute(
            select(PredictionLogRow, PredictionFeedback)
            .join(
                PredictionFeedback,
                (PredictionFeedback.model_name == PredictionLogRow.model_name)
                & (PredictionFeedback.request_id == PredictionLogRow.request_id),
            )
            .where(PredictionLogRow.model_name == model)
            .where(PredictionLogRow.model_version == version)
            .where(PredictionLogRow.shadow.is_(shadow))
            .where(PredictionLogRow.at >= since)
        )
        matched: list[tuple[Any, Any]] = []
        classifier = False
        for logged, feedback in pairs:
            matched.extend(zip(logged.predictions, feedback.labels, strict=False))
            classifier = classifier or _is_classification(logged)
    if not matched:
        return None
    metric, value = next(iter(_metrics(matched, classifier).items()))
    return VersionQuality(version, metric, value, len(matched))


def _is_classification(logged: PredictionLogRow) -> bool:
    return logged.probabilities is not None or not all(
        isinstance(p, int | float) and not isinstance(p, bool) for p in logged.predictions
    )


def _metrics(matched: list[tuple[Any, Any]], classification: bool) -> dict[str, float]:
    if classification:
        correct = sum(1 for predicted, label in matched if _same(predicted, label))
        return {"accuracy": correct / len(matched)}
    errors = [float(predicted) - float(label) for predicted, label in matched]
    return {
        "mae": sum(abs(e) for e in errors) / len(errors),
        "rmse": math.sqrt(sum(e * e for e in errors) / len(errors)),
    }


def _same(predicted: Any, label: Any) -> bool:
    """Labels compare by value across JSON types (1 == 1.0 == "1")."""
    return predicted == label or str(predicted) == str(label)
