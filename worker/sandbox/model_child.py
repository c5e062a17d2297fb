"""Loads the model a notebook exported and saves it as an MLflow model folder.

Run inside the kernel sandbox (mlops_core/sandbox.py) as `python -I -m worker.sandbox.model_child`
with the kernel's environment: unpickling a file the notebook wrote runs code the notebook
chose, so it must happen where no platform secret and no platform service is in reach. The
register phase starts it while the notebook is still running: it imports MLflow and
scikit-learn (the slow part) at once, then waits for its job, one JSON line on stdin (EOF:
nothing to do). It writes the model folder (MLmodel, pickle, signature, input example) into
the work folder; the worker uploads it to the tracking server. Prints one JSON object (the
result) as its last stdout line.

The model is saved with cloudpickle, deliberately: skops (MLflow's default) refuses tree
models unless their types are listed as trusted, and listing whatever the notebook produced
would trust it anyway. The pickle is only ever loaded by model servers, which load what the
registry serves, and by this sandboxed child. Its requirements are the packages the model
refers to, at the versions the kernel has (worker/sandbox/model_requirements.py), the
packages of the notebook's requirements.txt included.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import re
import site
import sys
import traceback
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import cloudpickle
import joblib
import mlflow.sklearn
import numpy
import pandas
import sklearn  # noqa: F401 -- imported while the notebook runs, not when its model is ready
from mlflow.models import infer_signature

from mlops_core.notebook_requirements import REQUIREMENTS_PATH_VARIABLE
from worker.sandbox.model_requirements import model_requirements, package_providers

MODEL_SUFFIXES = {".joblib", ".pkl", ".pickle", ".sav", ".model"}


def example_input(model: Any) -> Any | None:
    """One row shaped like the model's input, when its feature names or count are known.

    Numeric columns get 0.0; a column a fitted encoder (OneHotEncoder, OrdinalEncoder, ...)
    learned categories for gets its first category, so a pipeline mixing string and numeric
    columns gets a signature that says which column holds strings (and a warm-up row the
    model server can predict) instead of none.
    """
    names = getattr(model, "feature_names_in_", None)
    if names is not None:
        columns = [str(n) for n in names]
        categories = _first_categories(model)
        row = [categories.get(name, 0.0) for name in columns]
        return pandas.DataFrame([row], columns=columns)
    count = getattr(model, "n_features_in_", None)
    if isinstance(count, int) and count > 0:
        return numpy.zeros((1, count))
    return None


def _load_error(exc: Exception) -> str:
    """Why the exported file does not load, naming a class defined in a notebook cell."""
    defined_in_cell = re.search(r"Can't get attribute '([^']+)' on <module '([^']+)'", str(exc))
    main = getattr(sys.modules["__main__"], "__spec__", None)
    if defined_in_cell and defined_in_cell.group(2) in {"__main__", getattr(main, "name", "")}:
        return (
            f"the model file cannot be loaded: it refers to {defined_in_cell.group(1)!r}, "
            "defined in a notebook cell, which exists only in that kernel: use scikit-learn's "
            "own estimators, or define it in a module committed beside the notebook and import it"
        )
    return f"the model file cannot be loaded with joblib: {exc!r}"


@functools.cache
def _resolved(file: str) -> Path:
    """A module file's real path; cached, since most modules are loaded (and resolved, by
    `warm_up`) before the job arrives: resolving all ~2,500 took 0.25 s."""
    return Path(file).resolve()


def embed_repository_code(root: Path) -> None:
    """Save code from the pushed repository inside the model, not as a reference to it.

    A transformer class or function a notebook imports from a module committed beside it
    (`from features import AddRatios`) unpickles here, where the checkout is the working
    directory, but not on a model server, which has no checkout: there it failed with
    "No module named 'features'". cloudpickle can store such modules by value instead.
    """
    root = root.resolve()
    for module in list(sys.modules.values()):
        file = getattr(module, "__file__", None)
        if file and _resolved(file).is_relative_to(root):
            cloudpickle.register_pickle_by_value(module)


def _models_written_since(folder: Path, since: float, limit: int = 3) -> list[str]:
    """Model-like files under the notebook's folder written during this run (a wrong export)."""
    found = []
    for candidate in sorted(folder.rglob("*")):
        if (
            candidate.suffix.lower() in MODEL_SUFFIXES
            and candidate.is_file()
            and candidate.stat().st_mtime >= since
        ):
            found.append(str(candidate.relative_to(folder)))
    return found[:limit]


def _first_categories(estimator: Any) -> dict[str, str]:
    """Column name → the first string category a fitted encoder inside `estimator` learned."""
    found: dict[str, str] = {}
    names = getattr(estimator, "feature_names_in_", None)
    categories = _categories(estimator)
    if names is not None and categories is not None and len(categories) == len(names):
        for name, values in zip(names, categories, strict=True):
            if len(values) and isinstance(values[0], str):
                found[str(name)] = values[0]
    for child in _children(estimator):
        for name, value in _first_categories(child).items():
            found.setdefault(name, value)
    return found


def _categories(estimator: Any) -> Any | None:
    """The `categories_` of an encoder, or of the encoder inside a small pipeline."""
    steps = getattr(estimator, "steps", None) or []
    for candidate in (estimator, *(step for _, step in steps)):
        categories = getattr(candidate, "categories_", None)
        if categories is not None:
            return categories
    return None


def _children(estimator: Any) -> list[Any]:
    """Fitted sub-estimators of a Pipeline, ColumnTransformer or FeatureUnion."""
    if isinstance(getattr(estimator, "steps", None), list):
        return [step for _, step in estimator.steps]
    parts = getattr(estimator, "transformers_", None) or getattr(estimator, "transformer_list", [])
    return [part[1] for part in parts if not isinstance(part[1], str)]


def log_model(
    spec: dict[str, Any], providers: Mapping[str, list[str]] | None = None
) -> dict[str, Any]:
    """Save the exported model as an MLflow model folder; `providers`: package_providers()
    read ahead (warm_up), else read here."""
    path = Path(spec["model_path"])
    if not path.is_file():
        error = (
            "the notebook did not write a model to MODEL_OUTPUT_PATH "
            "(export it with joblib.dump(model, MODEL_OUTPUT_PATH))"
        )
        written = _models_written_since(Path.cwd(), float(spec.get("run_started", 0)))
        if written:
            error += f"; it wrote {', '.join(written)} instead"
        return {"ok": False, "error": error}
    code_dir = spec.get("code_dir")
    if code_dir:
        sys.path.insert(0, code_dir)  # modules beside the notebook, as in its kernel
    try:
        model = joblib.load(path)
    except Exception as exc:
        return {"ok": False, "error": _load_error(exc)}
    embed_repository_code(Path(spec.get("code_root") or Path.cwd()))
    if not callable(getattr(model, "predict", None)):
        kind = type(model).__name__
        return {"ok": False, "error": f"the exported object ({kind}) has no predict method"}

    example = example_input(model)
    signature = None
    if example is not None:
        try:
            signature = infer_signature(example, model.predict(example))
        except Exception:
            # The model does not take numbers of that shape (strings, say): a signature
            # built from zeros would reject its real inputs, so log none.
            example = None
    requirements, unprovided = model_requirements(model, providers)
    mlflow.sklearn.save_model(
        sk_model=model,
        path=spec["export_dir"],
        serialization_format=mlflow.sklearn.SERIALIZATION_FORMAT_CLOUDPICKLE,
        signature=signature,
        input_example=example,
        pip_requirements=requirements,
    )
    return {
        "ok": True,
        "model_class": f"{type(model).__module__}.{type(model).__qualname__}",
        "has_signature": signature is not None,
        "requirements": requirements,
        "unprovided_modules": unprovided,
    }


def warm_up() -> Mapping[str, list[str]]:
    """Do now, while the notebook still runs, the slow work of logging any model: read which
    package provides each module (for the requirements, and MLflow's own copy it checks them
    with) and resolve the loaded modules' paths (for embed_repository_code). Logging the
    iris model took 1.4 s with this done at the job, 0.16 s after. Returns the package map."""
    providers = package_providers()
    with contextlib.suppress(ImportError, AttributeError):  # MLflow's cache; it may move
        from mlflow.utils import requirements_utils

        requirements_utils._init_packages_to_modules_map()
    for module in list(sys.modules.values()):
        file = getattr(module, "__file__", None)
        if file:
            _resolved(file)
    return providers


def main() -> None:
    # The packages of the notebook's requirements.txt, where the kernel found them too (after
    # the platform's own; see mlops_core/kernel_startup.py).
    for folder in os.environ.get(REQUIREMENTS_PATH_VARIABLE, "").split(os.pathsep):
        if folder:
            site.addsitedir(folder)
    providers = warm_up()
    line = sys.stdin.readline()
    if not line.strip():
        return  # the pipeline ended before a model was exported
    spec = json.loads(line)
    try:
        result = log_model(spec, providers)
    except Exception as exc:
        lines = traceback.format_exception(exc)
        result = {"ok": False, "error": f"logging the model failed: {exc!r}", "trace": lines[-5:]}
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
