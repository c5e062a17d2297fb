"""Traffic, latency and errors of a model per version over time, from the prediction log.

The model page draws its monitoring charts from this, so they work without Prometheus.
`requests` counts answered predictions, `errors` the failed requests to a served version
(table `prediction_errors`), and the error rate is errors / (requests + errors). Reads at most
MAX_ROWS records of each kind in the window (the newest), enough for a day of a busy model at
the default sampling; with PREDICTION_LOG_SAMPLE_RATE below 1, both counts are of sampled
records (sampled alike, so the error rate holds). A shadow challenger's answers
(mlops_core/canary.py) answered no caller: `traffic` leaves them out, `latency_since` reads
them on request (the canary comparison).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import numpy as np
from sqlalchemy import select

from mlops_core.database import session_scope
from mlops_core.schema import PredictionErrorRow, PredictionLogRow

MAX_ROWS = 200_000


@dataclass(frozen=True)
class Latency:
    """Answered requests and their latency, failed requests by reason (percentiles are None
    when nothing was answered)."""

    requests: int
    p50_ms: float | None
    p95_ms: float | None
    errors: dict[str, int] = field(default_factory=dict)

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())

    @property
    def error_rate(self) -> float:
        attempts = self.requests + self.error_count
        return self.error_count / attempts if attempts else 0.0


@dataclass(frozen=True)
class Bucket:
    start: datetime
    version: str
    latency: Latency


@dataclass(frozen=True)
class Traffic:
    since: datetime
    bucket_seconds: int
    buckets: list[Bucket]
    versions: dict[str, Latency]


def _latency(values: Sequence[float], errors: Mapping[str, int]) -> Latency:
    if not values:
        return Latency(0, None, None, dict(errors))
    p50, p95 = np.percentile(np.asarray(values), [50, 95])
    return Latency(len(values), round(float(p50), 3), round(float(p95), 3), dict(errors))


def traffic(
    database_url: str, model: str, *, hours: int, buckets: int, now: datetime | None = None
) -> Traffic:
    """Requests, latency percentiles and errors per version, per bucket of the last `hours`."""
    end = now or datetime.now(UTC)
    since = end - timedelta(hours=hours)
    width = max(1, int(hours * 3600 / buckets))
    with session_scope(database_url) as session:
        rows = session.execute(
            select(PredictionLogRow.at, PredictionLogRow.model_version, PredictionLogRow.latency_ms)
            .where(PredictionLogRow.model_name == model)
            .where(PredictionLogRow.at >= since)
            .where(PredictionLogRow.shadow.is_(False))
            .order_by(PredictionLogRow.at.desc())
            .limit(MAX_ROWS)
        ).all()
        failures = session.execute(
            select(
                PredictionErrorRow.at, PredictionErrorRow.model_version, PredictionErrorRow.reason
            )
            .where(PredictionErrorRow.model_name == model)
            .where(PredictionErrorRow.at >= since)
            .where(PredictionErrorRow.shadow.is_(False))
            .order_by(PredictionErrorRow.at.desc())
            .limit(MAX_ROWS)
        ).all()

    def bucket(at: datetime) -> int:
        moment = at if at.tzinfo is not None else at.replace(tzinfo=UTC)
        return int((moment - since).total_seconds() // width)

    per_bucket: dict[tuple[int, str], list[float]] = defaultdict(list)
    per_version: dict[str, list[float]] = defaultdict(list)
    for at, version, latency in rows:
        per_bucket[(bucket(at), version)].append(latency)
        per_version[version].append(latency)
    errors_per_bucket: dict[tuple[int, str], Counter[str]] = defaultdict(Counter)
    errors_per_version: dict[str, Counter[str]] = defaultdict(Counter)
    for at, version, reason in failures:
        errors_per_bucket[(bucket(at), version)][reason] += 1
        errors_per_version[version][reason] += 1
    return Traffic(
        since=since,
        bucket_seconds=width,
        buckets=[
            Bucket(
                since + timedelta(seconds=index * width),
                version,
                _latency(
                    per_bucket.get((index, version), ()),
                    errors_per_bucket.get((index, version), {}),
                ),
            )
            for index, version in sorted(per_bucket.keys() | errors_per_bucket.keys())
        ],
        versions={
            version: _latency(per_version.get(version, ()), errors_per_version.get(version, {}))
            for version in sorted(per_version.keys() | errors_per_version.keys())
        },
    )


def latency_since(
    database_url: str, model: str, version: str, since: datetime, *, shadow: bool
) -> Latency:
    """One version's answers and failures since `since`: those it returned to callers, or with
    `shadow` those to the copies it got as a shadow challenger."""
    with session_scope(database_url) as session:
        values = session.scalars(
            select(PredictionLogRow.latency_ms)
            .where(PredictionLogRow.model_name == model)
            .where(PredictionLogRow.model_version == version)
            .where(PredictionLogRow.shadow.is_(shadow))
            .where(PredictionLogRow.at >= since)
            .order_by(PredictionLogRow.at.desc())
            .limit(MAX_ROWS)
        ).all()
        reasons = session.scalars(
            select(PredictionErrorRow.reason)
            .where(PredictionErrorRow.model_name == model)
            .where(PredictionErrorRow.model_version == version)
            .where(PredictionErrorRow.shadow.is_(shadow))
            .where(PredictionErrorRow.at >= since)
            .order_by(PredictionErrorRow.at.desc())
            .limit(MAX_ROWS)
        ).all()
    return _latency(list(values), Counter(reasons))
