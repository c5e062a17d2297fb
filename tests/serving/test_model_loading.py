"""Loading a registered version the way every model server does (download, load, warm up)."""

from __future__ import annotations

import sys
from contextlib import closing
from pathlib import Path
from typing import Any

import cloudpickle
import mlflow
import numpy as np
import pytest
from mlflow import MlflowClient
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline

from model_server.loaded_model import ModelLoadError, load_version
from tests.serving.conftest import unique


class AppendSum(BaseEstimator, TransformerMixin):
    """A hand-written first step: it records no feature count, as many real ones do not."""

    def fit(self, x: Any, y: Any = None) -> AppendSum:
        return self

    def transform(self, x: Any) -> np.ndarray:
        x = np.asarray(x, dtype=float)
        return np.column_stack([x, x.sum(axis=1)])


class Broken(BaseEstimator):
    def predict(self, x: Any) -> np.ndarray:
        raise RuntimeError("broken artifact")


def register_without_example(model: Any, name: str) -> str:
    """Log like a notebook's export whose input width the platform could not tell.

    The classes above are saved by value, as the worker saves a repository's own modules:
    the model process that loads them cannot import this test module.
    """
    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    with mlflow.start_run():
        info = mlflow.sklearn.log_model(
            model,
            name="model",
            pip_requirements=["scikit-learn"],
            serialization_format=mlflow.sklearn.SERIALIZATION_FORMAT_CLOUDPICKLE,
        )
    return str(mlflow.register_model(info.model_uri, name).version)


def test_a_model_of_unknown_input_width_loads_and_predicts(
    registry: MlflowClient, mlflow_uri: str, tmp_path: Path
) -> None:
    """Regression: the warm-up guessed a one-column row, which such a model cannot take, and
    every model server refused to serve it."""
    x = np.array([[0.0, 1.0, 0.0], [1.0, 0.0, 1.0], [0.0, 0.9, 0.1], [1.0, 0.1, 0.9]])
    model = make_pipeline(AppendSum(), LogisticRegression()).fit(x, [0, 1, 0, 1])
    name = unique("unknown-width")
    version = register_without_example(model, name)

    with closing(load_version(name, version, mlflow_uri, tmp_path)) as loaded:
        assert loaded.features.count is None
        assert loaded.predict([[0.0, 1.0, 0.0], [1.0, 0.0, 1.0]]).predictions == [0, 1]


def test_a_model_that_cannot_predict_still_fails_to_load(
    registry: MlflowClient, mlflow_uri: str, tmp_path: Path
) -> None:
    """The warm-up still catches a broken artifact when the input width is known."""
    broken = Broken()
    broken.n_features_in_ = 2
    name = unique("broken")
    version = register_without_example(broken, name)
    with pytest.raises(ModelLoadError, match="RuntimeError: broken artifact"):
        load_version(name, version, mlflow_uri, tmp_path)
