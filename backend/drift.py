"""Data drift of a served version: recent live inputs against a reference, feature by feature.

The tests are Evidently's defaults, computed with scipy (Evidently itself pulls a large
dependency tree for four tests): per feature, with a reference of at most 1,000 rows, the
two-sample Kolmogorov-Smirnov test for numeric columns and the chi-square test for categorical
ones (drift when p < 0.05); with a larger reference, the normed Wasserstein distance for numeric
columns and the Jensen-Shannon distance for categorical ones (drift when ≥ 0.1). A numeric
column with at most 5 distinct reference values counts as categorical, as in Evidently.
`drift_detected` says that some feature drifted (and names them), `dataset_drift` that at
least half of them did (Evidently's dataset-level rule).

The pure functions come first; `drift_of` reads the prediction log; `DriftWatch` re-checks
every served model on an interval and exports `ml_drift_detected` and
`ml_drifted_feature_count`.
"""

from __future__ import annotations

import itertools
import logging
import math
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np
from sqlalchemy import func, select

from backend.metrics import DRIFT_DETECTED, DRIFTED_FEATURES
from backend.periodic import every
from mlops_core.database import session_scope
from mlops_core.schema import ModelReference, PredictionLogRow
from mlops_core.settings import Settings

log = logging.getLogger(__name__)

SMALL_SAMPLE = 1000
P_VALUE_THRESHOLD = 0.05
DISTANCE_THRESHOLD = 0.1
DATASET_SHARE = 0.5
CATEGORICAL_MAX_UNIQUE = 5


@dataclass(frozen=True)
class FeatureDrift:
    method: str
    statistic: float
    p_value: float | None
    distance: float | None
    drifted: bool


@dataclass(frozen=True)
class Histogram:
    """Both sides of a feature on shared bins, as shares of their rows (for the model page)."""

    bins: list[str]
    reference: list[float]
    current: list[float]


@dataclass(frozen=True)
class DriftReport:
    features: dict[str, FeatureDrift]
    histograms: dict[str, Histogram] = field(default_factory=dict)

    @property
    def drift_detected(self) -> bool:
        return bool(self.drifted_features)

    @property
    def dataset_drift(self) -> bool:
        return bool(self.features) and self.share_drifted >= DATASET_SHARE

    @property
    def drifted_features(self) -> list[str]:
        return [name for name, result in self.features.items() if result.drifted]

    @property
    def share_drifted(self) -> float:
        return len(self.drifted_features) / len(self.features) if self.features else 0.0


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def feature_drift(reference: Sequence[Any], current: Sequence[Any]) -> FeatureDrift:
    """Whether one feature's current values come from another distribution than the reference."""
    # Imported here: scipy.stats is an eighth of the backend's start-up time, and most backends
    # (and every backend's first seconds) never compute drift.
    from scipy import stats
    from scipy.spatial import distance

    numeric = all(map(_is_number, reference)) and all(map(_is_number, current))
    if numeric and len(set(reference)) > CATEGORICAL_MAX_UNIQUE:
        ref, cur = np.asarray(reference, dtype=float), np.asarray(current, dtype=float)
        if len(ref) <= SMALL_SAMPLE:
            result = stats.ks_2samp(ref, cur)
            p = float(result.pvalue)
            return FeatureDrift("ks", float(result.statistic), p, None, p < P_VALUE_THRESHOLD)
        spread = float(np.std(ref)) or 1.0
        moved = float(stats.wasserstein_distance(ref, cur)) / spread
        return FeatureDrift("wasserstein", moved, None, moved, moved >= DISTANCE_THRESHOLD)
    ref_counts, cur_counts = Counter(map(str, reference)), Counter(map(str, current))
    categories = sorted(set(ref_counts) | set(cur_counts))
    if len(reference) <= SMALL_SAMPLE:
        # Expected counts from the reference's shares (a category it never saw gets a little
        # weight, so a new category shows as drift rather than a division by zero).
        shares = np.array([ref_counts[c] or 0.5 for c in categories], dtype=float)
        expected = shares / shares.sum() * len(current)
        observed = np.array([cur_counts[c] for c in categories], dtype=float)
        if len(categories) < 2:
            return FeatureDrift("chisquare", 0.0, 1.0, None, False)
        result = stats.chisquare(observed, expected)
        p = float(result.pvalue)
        return FeatureDrift("chisquare", float(result.statistic), p, None, p < P_VALUE_THRESHOLD)
    ref_p = np.array([ref_counts[c] for c in categories], dtype=float) / len(reference)
    cur_p = np.array([cur_counts[c] for c in categories], dtype=float) / len(current)
    apart = float(distance.jensenshannon(ref_p, cur_p))
    return FeatureDrift("jensenshannon", apart, None, apart, apart >= DISTANCE_THRESHOLD)


HISTOGRAM_BINS = 10


def histogram(reference: Sequence[Any], current: Sequence[Any]) -> Histogram:
    """Ten equal-width bins over both sides for numbers; the ten commonest values otherwise."""
    if all(map(_is_number, reference)) and all(map(_is_number, current)):
        both = np.asarray([*reference, *current], dtype=float)
        edges = np.histogram_bin_edges(both, bins=HISTOGRAM_BINS)
        ref, _ = np.histogram(np.asarray(reference, dtype=float), bins=edges)
        cur, _ = np.histogram(np.asarray(current, dtype=float), bins=edges)
        labels = [f"{lo:.3g} to {hi:.3g}" for lo, hi in itertools.pairwise(edges)]
        return Histogram(labels, _shares(ref.tolist()), _shares(cur.tolist()))
    ref_counts, cur_counts = Counter(map(str, reference)), Counter(map(str, current))
    common = [value for value, _ in (ref_counts + cur_counts).most_common(HISTOGRAM_BINS)]
    return Histogram(
        common,
        _shares([ref_counts[v] for v in common], len(reference)),
        _shares([cur_counts[v] for v in common], len(current)),
    )


def _shares(counts: list[int], total: int | None = None) -> list[float]:
    whole = total if total is not None else sum(counts)
    return [round(count / whole, 4) if whole else 0.0 for count in counts]


def dataset_drift(
    reference: Sequence[dict[str, Any]], current: Sequence[dict[str, Any]]
) -> DriftReport:
    """Each feature present in every row of both sets, tested."""
    names = [
        name
        for name in reference[0]
        if all(name in row for row in reference) and all(name in row for row in current)
    ]
    columns = {
        name: ([row[name] for row in reference], [row[name] for row in current]) for name in names
    }
    return DriftReport(
        {name: feature_drift(ref, cur) for name, (ref, cur) in columns.items()},
        {name: histogram(ref, cur) for name, (ref, cur) in columns.items()},
    )


@dataclass(frozen=True)
class VersionDrift:
    """The drift of one version, or why it cannot be told yet."""

    model: str
    version: str
    reference_source: str  # "training" | "first_predictions"
    reference_rows: int
    current_rows: int
    current_since: datetime | None
    report: DriftReport | None
    reason: str | None = None


def _rows(records: Sequence[PredictionLogRow]) -> list[dict[str, Any]]:
    return [row for record in records for row in record.inputs]


def drift_of(
    database_url: str,
    model: str,
    version: str,
    *,
    window: int,
    reference_window: int,
    min_rows: int,
    training_reference: list[dict[str, Any]] | None = None,
) -> VersionDrift:
    """Drift of `version`'s latest `window` logged input rows against its reference.

    The reference is the training data the notebook saved when there is one, else the
    version's first `reference_window` logged rows (then the current window never overlaps it).
    """
    with session_scope(database_url) as session:
        base = (
            select(PredictionLogRow)
            .where(PredictionLogRow.model_name == model)
            .where(PredictionLogRow.model_version == version)
        )
        newest = list(session.scalars(base.order_by(PredictionLogRow.at.desc()).limit(window)))
        oldest: list[PredictionLogRow] = []
        if training_reference is None:
            oldest = list(
                session.scalars(base.order_by(PredictionLogRow.at).limit(reference_window))
            )
    if training_reference is not None:
        source, reference = "training", training_reference
        current_records = newest
    else:
        source, reference = "first_predictions", _rows(oldest)[:reference_window]
        taken = {record.id for record in oldest}
        current_records = [record for record in newest if record.id not in taken]
    current = _rows(current_records)[:window]
    since = min((r.at for r in current_records), default=None)
    if len(reference) < min_rows or len(current) < min_rows:
        why = (
            f"not enough rows yet: reference {len(reference)}, current {len(current)} "
            f"(at least {min_rows} each)"
        )
        return VersionDrift(model, version, source, len(reference), len(current), since, None, why)
    report = dataset_drift(reference, current)
    return VersionDrift(model, version, source, len(reference), len(current), since, report)


def latest_versions(database_url: str) -> dict[str, str]:
    """Model → the version of its newest logged prediction (the one serving now)."""
    with session_scope(database_url) as session:
        newest = (
            select(PredictionLogRow.model_name, func.max(PredictionLogRow.at).label("at"))
            .where(PredictionLogRow.shadow.is_(False))  # a shadow challenger serves no one
            .group_by(PredictionLogRow.model_name)
            .subquery()
        )
        rows = session.execute(
            select(PredictionLogRow.model_name, PredictionLogRow.model_version).join(
                newest,
                (newest.c.model_name == PredictionLogRow.model_name)
                & (newest.c.at == PredictionLogRow.at),
            )
        )
        return {name: version for name, version in rows}


def training_reference(database_url: str, model: str, version: str) -> list[dict[str, Any]] | None:
    """The training rows the version's notebook saved, if it saved any."""
    with session_scope(database_url) as session:
        found = session.get(ModelReference, (model, version))
        return list(found.rows) if found is not None else None


def check(settings: Settings, model: str, version: str) -> VersionDrift:
    """`drift_of` with the settings' windows and the version's reference; updates the gauges."""
    result = drift_of(
        settings.database_url,
        model,
        version,
        window=settings.drift_window,
        reference_window=settings.reference_window,
        min_rows=settings.drift_min_rows,
        training_reference=training_reference(settings.database_url, model, version),
    )
    if result.report is not None:
        DRIFT_DETECTED.labels(model, version).set(int(result.report.drift_detected))
        DRIFTED_FEATURES.labels(model, version).set(len(result.report.drifted_features))
    return result


@asynccontextmanager
async def drift_watch_loop(settings: Settings) -> AsyncIterator[None]:
    """Re-checks every logged model's drift on an interval while the app runs."""

    def check_all() -> None:
        for model, version in latest_versions(settings.database_url).items():
            check(settings, model, version)

    async with every(settings.drift_check_interval_seconds, check_all, name="drift-watch"):
        yield
