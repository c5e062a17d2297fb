"""Traffic and latency of a model per version over time, from the prediction log.

The model page draws its monitoring charts from this, so they work without Prometheus. Reads
at most MAX_ROWS records of the window (the newest), enough for a day of a busy model at the
default sampling; with PREDICTION_LOG_SAMPLE_RATE below 1, request counts are of sampled
records.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import numpy as np
from sqlalchemy import select

from mlops_core.database import session_scope
from mlops_core.schema import PredictionLogRow

MAX_ROWS = 200_000


@dataclass(frozen=True)
class Latency:
    requests: int
    p50_ms: float
    p95_ms: float


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


def _latency(values: list[float]) -> Latency:
    p50, p95 = np.percentile(np.asarray(values), [50, 95])
    return Latency(len(values), round(float(p50), 3), round(float(p95), 3))


def traffic(
    database_url: str, model: str, *, hours: int, buckets: int, now: datetime | None = None
) -> Traffic:
    """Requests and latency percentiles per version, per bucket of the last `hours`."""
    end = now or datetime.now(UTC)
    since = end - timedelta(hours=hours)
    width = max(1, int(hours * 3600 / buckets))
    with session_scope(database_url) as session:
        rows = session.execute(
            select(PredictionLogRow.at, PredictionLogRow.model_version, PredictionLogRow.latency_ms)
            .where(PredictionLogRow.model_name == model)
            .where(PredictionLogRow.at >= since)
            .order_by(PredictionLogRow.at.desc())
            .limit(MAX_ROWS)
        ).all()
    per_bucket: dict[tuple[int, str], list[float]] = defaultdict(list)
    per_version: dict[str, list[float]] = defaultdict(list)
    for at, version, latency in rows:
        moment = at if at.tzinfo is not None else at.replace(tzinfo=UTC)
        index = int((moment - since).total_seconds() // width)
        per_bucket[(index, version)].append(latency)
        per_version[version].append(latency)
    return Traffic(
        since=since,
        bucket_seconds=width,
        buckets=[
            Bucket(since + timedelta(seconds=index * width), version, _latency(values))
            for (index, version), values in sorted(per_bucket.items())
        ],
        versions={version: _latency(values) for version, values in sorted(per_version.items())},
    )
