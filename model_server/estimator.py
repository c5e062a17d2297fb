"""A registered model version in memory: load, describe, warm up and predict.

This runs only in a model process (model_server/model_child.py), inside the sandbox: loading
unpickles code the notebook chose. It prefers the scikit-learn flavour (the estimator itself
gives predict_proba, class labels and feature names) and falls back to pyfunc for anything else.
A version is warmed with one prediction when loaded, so a broken artifact fails while the
previous version is still serving, not on a user's request; a version needing a package this
server lacks fails before unpickling, naming the package.
"""

from __future__ import annotations

import logging
import math
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow.pyfunc
import mlflow.sklearn
import numpy as np
import pandas as pd
from mlflow.models import Model
from packaging.requirements import InvalidRequirement, Requirement

from mlops_core.notebook_requirements import distribution_for_import, installed_provider
from model_server.feature_spec import NUMBER, STRING, FeatureSpec

log = logging.getLogger(__name__)

_STRING_TYPES = {"string", "str", "object"}


@dataclass
class Estimator:
    """A loaded model and what the server needs to know about it."""

    flavor: str
    model: Any
    features: FeatureSpec
    classes: list[Any] | None
    # Labels are classes_[argmax(predict_proba)] for this model: one pass instead of two.
    labels_from_proba: bool = False
    # The model takes a plain array as well as a DataFrame with its column names (decided at
    # load): building a DataFrame per call costs about what a logistic regression's predict does.
    array_input: bool = False

    def __post_init__(self) -> None:
        self._classes = np.asarray(self.classes) if self.classes is not None else None

    @property
    def has_proba(self) -> bool:
        return self.flavor == "sklearn" and hasattr(self.model, "predict_proba")

    def model_input(self, rows: Any) -> pd.DataFrame | np.ndarray:
        """Rows in the form the model was trained on: a DataFrame when it needs column names."""
        if self.features.names is not None and not self.array_input:
            return pd.DataFrame(rows, columns=list(self.features.names))
        if self.features.kinds and STRING in self.features.kinds:
            return np.asarray(rows, dtype=object)
        return np.asarray(rows, dtype=np.float64)

    def outputs(self, rows: Any, probabilities: bool = True) -> tuple[Any, np.ndarray | None]:
        """Predictions and, for classifiers when asked, probabilities.

        Numeric outputs stay numpy arrays (the channel writes them without making lists
        first); labels of other types are lists. JSON has no NaN or infinity: outputs that are
        not finite (inputs far outside what the model was trained on) raise ValueError, which
        the server answers as a client error.
        """
        predictions, proba = self.raw_outputs(rows, probabilities)
        if not _all_finite(predictions) or (proba is not None and not np.isfinite(proba).all()):
            raise ValueError("the model's output for these rows is not a finite number")
        return predictions, proba if probabilities else None

    def raw_outputs(self, rows: Any, probabilities: bool = True) -> tuple[Any, np.ndarray | None]:
        """Outputs unchecked; probabilities are computed when asked or when labels come from
        them (then they are returned even if not asked, for the finiteness check)."""
        x = self.model_input(rows)
        if not self.has_proba:
            return _plain(self.model.predict(x)), None
        if self.labels_from_proba and self._classes is not None:
            proba = np.asarray(self.model.predict_proba(x), dtype=np.float64)
            return _plain(self._classes[proba.argmax(axis=1)]), proba
        labels = _plain(self.model.predict(x))
        if not probabilities:
            return labels, None
        return labels, np.asarray(self.model.predict_proba(x), dtype=np.float64)


class MissingPackages(Exception):
    """The version needs packages this model server's environment does not have."""


def missing_requirements(local: Path) -> list[str]:
    """The requirements of the model folder `local` that no installed package satisfies by name.

    The worker writes the packages the model refers to (worker/sandbox/model_requirements.py);
    a package this server lacks would fail the load somewhere inside unpickling, so it is
    named first. A different version of a package is not refused here: the warm-up tells
    whether the model works with it.
    """
    path = local / "requirements.txt"
    if not path.is_file():
        return []
    missing: list[str] = []
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if not line or line.startswith("-"):
            continue
        try:
            requirement = Requirement(line)
        except InvalidRequirement:
            continue
        applies = requirement.marker is None or requirement.marker.evaluate()
        if applies and installed_provider(requirement.name) is None:
            missing.append(str(requirement))
    return missing


def _missing_packages_error(packages: list[str]) -> MissingPackages:
    named = ", ".join(f"`{p}`" for p in packages)
    one = len(packages) == 1
    return MissingPackages(
        f"the version needs {named}, which this model server's environment does not have: "
        f"install {'it' if one else 'them'} where the model server runs (the model records the "
        f"packages it was trained with in its requirements.txt)"
    )


def _unpickled(local: Path, flavor: str) -> Any:
    """The model object; a module missing while unpickling is named with its package."""
    try:
        if flavor == "sklearn":
            return mlflow.sklearn.load_model(str(local))
        return mlflow.pyfunc.load_model(str(local))
    except ModuleNotFoundError as exc:
        if exc.name is None:
            raise
        raise _missing_packages_error([distribution_for_import(exc.name)]) from exc


def load(local: Path) -> Estimator:
    """Load and warm the MLflow model folder `local`; raises on any failure."""
    meta = Model.load(str(local))
    missing = missing_requirements(local)
    if missing:
        raise _missing_packages_error(missing)
    flavor = "sklearn" if "sklearn" in meta.flavors else "pyfunc"
    model = _unpickled(local, flavor)
    features = _feature_spec(model, meta)
    classes = np.asarray(model.classes_).tolist() if hasattr(model, "classes_") else None
    try:
        example = meta.load_input_example(str(local))
    except Exception:  # an unreadable example only costs us the warm-up input
        example = None
    estimator = Estimator(flavor, model, features, classes)
    try:
        warm = _warm_rows(features, example)
        estimator.raw_outputs(warm)  # a NaN is the guess's fault
        estimator.labels_from_proba = _argmax_is_predict(estimator, warm)
        estimator.array_input = _takes_arrays(estimator, warm)
    except Exception:
        if features.count is not None or example is not None:
            raise
        # Nothing says how wide a row is (a custom first step with no feature count and no
        # input example): the warm-up row was a guess, not a test of the artifact.
        log.warning("warm-up skipped: the model's input shape is unknown")
    return estimator


# Classifiers whose `predict` is, by construction, the class of highest `predict_proba`.
# Others (an SVC's Platt scaling, calibrated or custom classifiers) keep both passes.
_ARGMAX_CLASSIFIERS = frozenset(
    {
        "DecisionTreeClassifier",
        "ExtraTreeClassifier",
        "RandomForestClassifier",
        "ExtraTreesClassifier",
        "GradientBoostingClassifier",
        "HistGradientBoostingClassifier",
        "LogisticRegression",
        "LogisticRegressionCV",
        "KNeighborsClassifier",
        "GaussianNB",
        "MultinomialNB",
        "BernoulliNB",
    }
)


def _argmax_is_predict(estimator: Estimator, warm: list[list[Any]]) -> bool:
    """Whether labels may come from the probabilities alone: a listed final estimator, and
    the two agree on the warm-up rows (a last check against a subclass that changes predict)."""
    if not estimator.has_proba or not hasattr(estimator.model, "classes_"):
        return False
    final = estimator.model
    while hasattr(final, "steps"):  # a Pipeline: its last step decides
        final = final.steps[-1][1]
    if (
        type(final).__name__ not in _ARGMAX_CLASSIFIERS
        or type(final).__module__.split(".")[0] != "sklearn"
    ):
        return False
    x = estimator.model_input(warm)
    by_argmax = np.asarray(estimator.model.classes_)[
        np.asarray(estimator.model.predict_proba(x)).argmax(axis=1)
    ]
    return bool(np.array_equal(by_argmax, np.asarray(estimator.model.predict(x))))


# What scikit-learn says when an estimator fitted on a DataFrame is given an array; said on
# every call, and by design here (see _takes_arrays).
_NO_FEATURE_NAMES = "X does not have valid feature names"


def _takes_arrays(estimator: Estimator, warm: list[list[Any]]) -> bool:
    """Whether a model that knows its column names answers a plain array exactly as it answers
    the DataFrame: a scikit-learn model of numeric features whose steps select no column by
    name (a ColumnTransformer given names refuses an array). Checked on the warm-up rows."""
    kinds = estimator.features.kinds or ()
    if estimator.flavor != "sklearn" or estimator.features.names is None or STRING in kinds:
        return False
    frame = estimator.raw_outputs(warm)
    estimator.array_input = True
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=_NO_FEATURE_NAMES, category=UserWarning)
            array = estimator.raw_outputs(warm)
    except Exception:
        return False
    finally:
        estimator.array_input = False
    same = all(
        np.array_equal(np.asarray(a), np.asarray(b))
        for a, b in zip(frame, array, strict=True)
        if a is not None or b is not None
    )
    if same:
        warnings.filterwarnings("ignore", message=_NO_FEATURE_NAMES, category=UserWarning)
    return same


def _all_finite(values: Any) -> bool:
    """Whether no float in `values` (an array, or lists and dicts nested) is NaN or infinite."""
    if isinstance(values, np.ndarray):
        return values.dtype.kind != "f" or bool(np.isfinite(values).all())
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


def _plain(raw: Any) -> np.ndarray | list[Any]:
    """Model outputs the channel can write: a contiguous numeric array as it is, anything else
    as lists of Python scalars (class labels keep their type)."""
    if isinstance(raw, np.ndarray) and raw.dtype.kind in "biuf":
        return np.ascontiguousarray(raw)
    return _to_list(raw)


def _to_list(raw: Any) -> list[Any]:
    """numpy / pandas outputs → lists of Python scalars (class labels keep their type)."""
    if isinstance(raw, pd.DataFrame):
        if raw.shape[1] == 1:
            return raw.iloc[:, 0].tolist()
        return raw.to_dict(orient="records")
    if isinstance(raw, pd.Series | np.ndarray):
        return raw.tolist()
    return list(raw)


def _feature_spec(model: Any, meta: Model) -> FeatureSpec:
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
    if hasattr(model, "feature_names_in_"):
        model_names = tuple(str(n) for n in model.feature_names_in_)
        if names != model_names:
            names, kinds = model_names, None
        count = len(names)
    elif hasattr(model, "n_features_in_"):
        count = int(model.n_features_in_)
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
