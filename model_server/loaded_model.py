"""One registered model version held in memory, ready to predict.

Loading downloads the version's artifacts from MLflow once, prefers the scikit-learn flavour (the
estimator itself gives predict_proba, class labels and feature names) and falls back to pyfunc for
anything else. A version is warmed with one prediction before it is handed out, so a broken
artifact fails here, while the previous version is still serving, not on a user's request.
"""

from __future__ import annotations

import logging
import math
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import mlflow
import mlflow.pyfunc
import mlflow.sklearn
import numpy as np
import pandas as pd
from mlflow.models import Model

log = logging.getLogger(__name__)

NUMBER = "number"
STRING = "string"

_STRING_TYPES = {"string", "str", "object"}


@dataclass(frozen=True)
class FeatureSpec:
    """What a model expects per row: how many features, their names and kinds when known."""

    count: int | None
    names: tuple[str, ...] | None
    kinds: tuple[str, ...] | None = None

    def kind(self, column: int) -> str:
        """NUMBER unless the signature says the column holds strings."""
        if self.kinds is None or column >= len(self.kinds):
            return NUMBER
        return self.kinds[column]


@dataclass
class Prediction:
    """A prediction's outputs as plain Python values (JSON-ready)."""

    predictions: list[Any]
    probabilities: list[list[float]] | None
    classes: list[Any] | None


@dataclass
class LoadedModel:
    """A loaded version; immutable once served except for its request counter."""

    name: str
    version: str
    flavor: str
    estimator: Any
    features: FeatureSpec
    classes: list[Any] | None
    loaded_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    requests: int = 0

    @property
    def has_proba(self) -> bool:
        return self.flavor == "sklearn" and hasattr(self.estimator, "predict_proba")

    def model_input(self, rows: list[list[Any]]) -> pd.DataFrame | np.ndarray:
        """Rows in the form the model was trained on: a DataFrame when it knows column names."""
        if self.features.names is not None:
            return pd.DataFrame(rows, columns=list(self.features.names))
        if self.features.kinds and STRING in self.features.kinds:
            return np.asarray(rows, dtype=object)
        return np.asarray(rows, dtype=np.float64)

    def predict(self, rows: list[list[Any]]) -> Prediction:
        """Predict validated rows for a request (runs in a worker thread, never on the event loop).

        JSON has no NaN or infinity: outputs that are not finite (inputs far outside what the
        model was trained on) raise ValueError, which the routes answer as a client error.
        """
        prediction = self._outputs(rows)
        if not _all_finite(prediction.predictions) or not _all_finite(
            prediction.probabilities or []
        ):
            raise ValueError("the model's output for these rows is not a finite number")
        return prediction

    def _outputs(self, rows: list[list[Any]]) -> Prediction:
        x = self.model_input(rows)
        raw = self.estimator.predict(x)
        probabilities = None
        if self.has_proba:
            probabilities = np.asarray(self.estimator.predict_proba(x)).tolist()
        return Prediction(_to_list(raw), probabilities, self.classes)


def _all_finite(values: list[Any]) -> bool:
    """Whether no float in `values` (lists and dicts nested in it included) is NaN or infinite."""
    pending: list[Any] = [values]
    while pending:
        item = pending.pop()
        if isinstance(item, float) and not math.isfinite(item):
            return False
        if isinstance(item, list):
            pending.extend(item)
        elif isinstance(item, dict):
            pending.extend(item.values())
    return True


def _to_list(raw: Any) -> list[Any]:
    """numpy / pandas outputs → lists of Python scalars (class labels keep their type)."""
    if isinstance(raw, pd.DataFrame):
        if raw.shape[1] == 1:
            return raw.iloc[:, 0].tolist()
        return raw.to_dict(orient="records")
    if isinstance(raw, pd.Series | np.ndarray):
        return raw.tolist()
    return list(raw)


def _feature_spec(estimator: Any, meta: Model) -> FeatureSpec:
    names: tuple[str, ...] | None = None
    kinds: tuple[str, ...] | None = None
    count: int | None = None
    schema = meta.signature.inputs if meta.signature is not None else None
    if schema is not None and not schema.is_tensor_spec() and schema.has_input_names():
        names = tuple(schema.input_names())
        kinds = tuple(
            STRING if str(getattr(t, "name", t)).lower() in _STRING_TYPES else NUMBER
            for t in schema.input_types()
        )
        count = len(names)
    elif schema is not None and schema.is_tensor_spec():
        shape = schema.inputs[0].shape
        if shape and len(shape) == 2 and shape[-1] > 0:
            count = int(shape[-1])
    if hasattr(estimator, "feature_names_in_"):
        estimator_names = tuple(str(n) for n in estimator.feature_names_in_)
        if names != estimator_names:
            names, kinds = estimator_names, None
        count = len(names)
    elif hasattr(estimator, "n_features_in_"):
        count = int(estimator.n_features_in_)
        if names is not None and len(names) != count:
            names, kinds = None, None
    return FeatureSpec(count=count, names=names, kinds=kinds)


def _warm_rows(features: FeatureSpec, example: Any) -> list[list[Any]]:
    if isinstance(example, pd.DataFrame) and len(example):
        if features.names is not None and set(features.names) <= set(example.columns):
            example = example[list(features.names)]
        return example.head(1).to_numpy(dtype=object).tolist()
    if isinstance(example, np.ndarray) and example.ndim == 2 and len(example):
        return example[:1].tolist()
    count = features.count or 1
    return [["" if features.kind(i) == STRING else 0.0 for i in range(count)]]


def load_version(name: str, version: str, tracking_uri: str, cache_dir: Path) -> LoadedModel:
    """Download, load and warm `models:/name/version`; raises on any failure."""
    started = time.monotonic()
    local_dir = Path(tempfile.mkdtemp(prefix=f"{name}-{version}-", dir=cache_dir))
    try:
        local = mlflow.artifacts.download_artifacts(
            artifact_uri=f"models:/{name}/{version}",
            dst_path=str(local_dir),
            tracking_uri=tracking_uri,
            registry_uri=tracking_uri,
        )
        meta = Model.load(local)
        if "sklearn" in meta.flavors:
            estimator: Any = mlflow.sklearn.load_model(local)
            flavor = "sklearn"
        else:
            estimator = mlflow.pyfunc.load_model(local)
            flavor = "pyfunc"
        features = _feature_spec(estimator, meta)
        classes = (
            np.asarray(estimator.classes_).tolist() if hasattr(estimator, "classes_") else None
        )
        try:
            example = meta.load_input_example(local)
        except Exception:  # an unreadable example only costs us the warm-up input
            example = None
        model = LoadedModel(name, version, flavor, estimator, features, classes)
        try:
            model._outputs(_warm_rows(features, example))  # a NaN here is the guess's fault
        except Exception:
            if features.count is not None or example is not None:
                raise
            # Nothing says how wide a row is (a custom first step with no feature count and
            # no input example): the warm-up row was a guess, not a test of the artifact.
            log.warning("%s version %s: warm-up skipped, input shape unknown", name, version)
    except BaseException:
        shutil.rmtree(local_dir, ignore_errors=True)
        raise
    if flavor == "sklearn":  # the estimator is in memory; pyfunc models may read files lazily
        shutil.rmtree(local_dir, ignore_errors=True)
    log.info(
        "loaded %s version %s (%s, %d features) in %.2fs",
        name,
        version,
        flavor,
        features.count or -1,
        time.monotonic() - started,
    )
    return model
