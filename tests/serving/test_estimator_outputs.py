"""One predict pass where it gives the same answer: labels from probabilities, checked."""

from __future__ import annotations

from pathlib import Path

import mlflow.sklearn
import numpy as np
import pytest
from sklearn.compose import ColumnTransformer
from sklearn.datasets import load_iris
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC

from model_server.estimator import load


@pytest.mark.parametrize(
    ("model", "one_pass"),
    [
        (RandomForestClassifier(n_estimators=20, random_state=0), True),
        (make_pipeline(StandardScaler(), LogisticRegression(max_iter=500)), True),
        # Platt scaling: the most probable class can differ from predict's.
        (SVC(probability=True, random_state=0), False),
    ],
)
def test_labels_equal_predicts_and_come_from_one_pass_only_where_that_holds(
    model: object, one_pass: bool, tmp_path: Path
) -> None:
    x, y = load_iris(return_X_y=True)
    labels = np.array(["setosa", "versicolor", "virginica"])[y]  # string classes keep their type
    model.fit(x, labels)  # type: ignore[attr-defined]
    mlflow.sklearn.save_model(
        model,
        str(tmp_path / "model"),
        serialization_format=mlflow.sklearn.SERIALIZATION_FORMAT_CLOUDPICKLE,
        input_example=x[:2],
    )
    loaded = load(tmp_path / "model")
    assert loaded.labels_from_proba is one_pass
    rows = (x + np.random.default_rng(0).normal(0, 0.5, x.shape)).tolist()
    predictions, probabilities = loaded.outputs(rows)
    assert list(predictions) == model.predict(np.asarray(rows)).tolist()  # type: ignore[attr-defined]
    assert probabilities is not None and probabilities.shape == (len(rows), 3)
    # Switched off: the same labels, no probabilities.
    labels, none = loaded.outputs(rows, probabilities=False)
    assert list(labels) == list(predictions) and none is None


@pytest.mark.parametrize(
    ("model", "takes_arrays"),
    [
        (LogisticRegression(max_iter=500), True),
        # Selects columns by name: only a DataFrame will do.
        (
            make_pipeline(
                ColumnTransformer([("scaled", StandardScaler(), ["petal length (cm)"])]),
                LogisticRegression(max_iter=500),
            ),
            False,
        ),
    ],
)
def test_a_model_fitted_on_a_dataframe_gets_arrays_when_it_answers_them_alike(
    model: object, takes_arrays: bool, tmp_path: Path
) -> None:
    iris = load_iris(as_frame=True)
    model.fit(iris.data, iris.target)  # type: ignore[attr-defined]
    mlflow.sklearn.save_model(
        model,
        str(tmp_path / "model"),
        serialization_format=mlflow.sklearn.SERIALIZATION_FORMAT_CLOUDPICKLE,
        input_example=iris.data[:2],
    )
    loaded = load(tmp_path / "model")
    assert loaded.array_input is takes_arrays
    rows = iris.data.to_numpy()[::7]
    predictions, probabilities = loaded.outputs(rows.tolist())
    expected = model.predict_proba(iris.data.iloc[::7])  # type: ignore[attr-defined]
    assert list(predictions) == model.predict(iris.data.iloc[::7]).tolist()  # type: ignore[attr-defined]
    assert probabilities is not None and np.allclose(probabilities, expected)
