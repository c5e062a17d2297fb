"""Drift tests against samples whose answer is known (no services; SQLite for the log)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.datasets import load_iris
from sklearn.model_selection import train_test_split

from backend.drift import check, dataset_drift, feature_drift, latest_versions
from backend.prediction_store import store_records
from mlops_core.database import upgrade_database
from mlops_core.prediction_log import PredictionRecord
from mlops_core.settings import Settings


def iris_split() -> tuple[pd.DataFrame, pd.DataFrame]:
    data = load_iris(as_frame=True)
    features = data.frame.drop(columns="target")
    train, test = train_test_split(features, test_size=0.3, random_state=0, stratify=data.target)
    return train, test


def test_the_test_split_does_not_drift_from_the_training_rows() -> None:
    train, test = iris_split()
    report = dataset_drift(train.to_dict("records"), test.to_dict("records"))
    assert set(report.features) == set(train.columns)
    assert {result.method for result in report.features.values()} == {"ks"}
    assert not report.drift_detected and report.drifted_features == []


def test_a_shifted_feature_is_named_and_only_it() -> None:
    train, test = iris_split()
    shifted = test.assign(**{"petal length (cm)": test["petal length (cm)"] + 2})
    report = dataset_drift(train.to_dict("records"), shifted.to_dict("records"))
    assert report.drift_detected
    assert report.drifted_features == ["petal length (cm)"]
    assert report.share_drifted == 0.25 and not report.dataset_drift  # Evidently: half or more
    both = shifted.assign(**{"petal width (cm)": test["petal width (cm)"] + 1})
    assert dataset_drift(train.to_dict("records"), both.to_dict("records")).dataset_drift


def test_large_samples_use_distances_and_categories_their_own_tests() -> None:
    rng = np.random.default_rng(0)
    reference = rng.normal(0, 1, 5000).tolist()
    same = feature_drift(reference, rng.normal(0, 1, 2000).tolist())
    moved = feature_drift(reference, rng.normal(0.5, 1, 2000).tolist())
    assert same.method == moved.method == "wasserstein"
    assert not same.drifted and moved.drifted

    colours = ["red", "green", "blue"]
    small_reference = rng.choice(colours, 600).tolist()
    assert not feature_drift(small_reference, rng.choice(colours, 300).tolist()).drifted
    skewed = rng.choice(colours, 300, p=[0.8, 0.1, 0.1]).tolist()
    result = feature_drift(small_reference, skewed)
    assert result.method == "chisquare" and result.drifted

    big_reference = rng.choice(colours, 3000).tolist()
    assert feature_drift(big_reference, skewed).method == "jensenshannon"
    assert feature_drift(big_reference, skewed).drifted
    assert not feature_drift(big_reference, rng.choice(colours, 3000).tolist()).drifted


def test_a_version_without_training_rows_takes_its_first_logged_rows_as_reference(
    tmp_path: Path,
) -> None:
    database_url = f"sqlite:///{tmp_path / 'drift.db'}"
    upgrade_database(database_url)
    train, test = iris_split()
    shifted = test.assign(**{"petal length (cm)": test["petal length (cm)"] + 2})
    start = datetime(2026, 1, 1, tzinfo=UTC)
    rows = [*train.to_dict("records"), *shifted.to_dict("records")]
    entries = [
        (
            f"{i + 1}-0",
            PredictionRecord(
                request_id=f"r{i}",
                at=start + timedelta(seconds=i),
                model="iris",
                version="3",
                replica="r",
                inputs=[row],
                predictions=[0],
                latency_ms=1.0,
            ),
        )
        for i, row in enumerate(rows)
    ]
    store_records(database_url, entries)
    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        database_url=database_url,
        reference_window=len(train),
        drift_window=len(test),
    )
    assert latest_versions(database_url) == {"iris": "3"}
    found = check(settings, "iris", "3")
    assert found.reference_source == "first_predictions"
    assert (found.reference_rows, found.current_rows) == (len(train), len(test))
    assert found.report is not None and found.report.drifted_features == ["petal length (cm)"]

    early = check(settings.model_copy(update={"drift_min_rows": 1000}), "iris", "3")
    assert early.report is None and "not enough rows yet" in (early.reason or "")
