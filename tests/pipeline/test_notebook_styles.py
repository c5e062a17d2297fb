"""Notebooks written the way data scientists write them, through the real worker and kernel.

Each test is a regression found by pushing notebooks the platform's authors did not write:
MLflow runs the notebook opens and closes itself, editors' file variants, mixed-type
DataFrames, progress output, and the mistakes a notebook that runs top to bottom in Jupyter
makes in a pipeline.
"""

from __future__ import annotations

import json
import sys
import tempfile
from contextlib import closing
from pathlib import Path

import mlflow
from mlflow import MlflowClient

from model_server.loaded_model import load_version
from model_server.request_rows import rows_from_body
from tests.pipeline.conftest import (
    WorkerGroup,
    build_notebook,
    create_pipeline,
    log_events,
    small_notebook,
    unique_model_name,
    wait_finished,
)


def run_notebook(
    group: WorkerGroup, make_repo, files: dict[str, str], notebook_path: str = "train.ipynb"
) -> dict:
    repo = make_repo()
    sha = repo.commit(files)
    pipeline_id = create_pipeline(
        group.database_url, repo, commit_sha=sha, notebook_path=notebook_path
    )
    group.send(pipeline_id)
    return wait_finished(group.database_url, pipeline_id)


def test_metrics_logged_after_the_notebooks_own_runs_end_reach_the_pipeline_run(
    shared_worker: WorkerGroup, make_repo
) -> None:
    """Regression: MLflow resumes MLFLOW_RUN_ID only once, so after autolog's run for `fit` or a
    `with mlflow.start_run():` block ended, later metrics went to a new run and the gate said
    "metric 'accuracy' was not logged". Nested runs must still be runs of their own.

    The file is saved as nbformat 4.2 with cell ids (VS Code style), which used to be refused.
    """
    name = unique_model_name("own-runs")
    raw = json.loads(
        small_notebook(
            name,
            preprocessing=(
                "import mlflow\nmlflow.sklearn.autolog(log_models=False, log_datasets=False)\n"
            ),
            training=(
                "with mlflow.start_run():\n"
                "    mlflow.log_param('inside', 'yes')\n"
                "    with mlflow.start_run(nested=True):\n"
                "        mlflow.log_metric('child_only', 1.0)\n"
                "mlflow.log_metric('after_with', 2.0)\n"
                "for step in range(200):\n"
                "    print(f'step {step}', end='\\r')\n"
                "print('trained')\n"
            ),
        )
    )
    raw["nbformat_minor"] = 2
    for i, cell in enumerate(raw["cells"]):
        cell["id"] = f"c{i}"
    repo = make_repo()
    sha = repo.commit({"train.ipynb": json.dumps(raw)})
    pipeline_id = create_pipeline(shared_worker.database_url, repo, commit_sha=sha)
    shared_worker.send(pipeline_id)
    state = wait_finished(shared_worker.database_url, pipeline_id)

    assert state["status"] == "success", state
    # A progress counter rewriting one line is logged as a terminal shows it, not 200 lines.
    texts = [e.text for e in log_events(shared_worker.redis_url, pipeline_id)]
    assert "trained" in texts
    assert len([t for t in texts if t.startswith("step ")]) < 20
    assert not [t for t in texts if "\r" in t]
    assert state["metrics"]["accuracy"] == 1.0  # the evaluation cell, after both runs ended
    assert state["metrics"]["after_with"] == 2.0
    assert "training_score" in state["metrics"]  # autolog's own metrics, same run
    assert "child_only" not in state["metrics"]
    client = MlflowClient(shared_worker.mlflow_uri)
    run = client.get_run(state["mlflow_run_id"])
    assert run.data.params["inside"] == "yes"
    children = client.search_runs(
        [e.experiment_id for e in client.search_experiments()],
        f"tags.mlflow.parentRunId = '{run.info.run_id}'",
    )
    assert [c.data.metrics for c in children] == [{"child_only": 1.0}]


def test_a_pipeline_mixing_string_and_numeric_columns_is_served_with_string_records(
    shared_worker: WorkerGroup, make_repo
) -> None:
    """Regression: the logged model had no signature (its example row was all zeros, which a
    OneHotEncoder refuses), so every model server failed to load it and records with a string
    were refused as "non-numeric"."""
    name = unique_model_name("mixed")
    csv = "city,rooms,label\n" + "".join(
        f"{city},{rooms},{'big' if rooms > 2 or city == 'paris' else 'small'}\n"
        for city in ("paris", "lyon", "nice")
        for rooms in range(1, 5)
    )
    notebook = build_notebook(
        [
            (("mlops:config",), f'MODEL_NAME = "{name}"\nVERSION = "1.0.0"'),
            (
                ("mlops:preprocessing",),
                "import pandas as pd\ndf = pd.read_csv('houses.csv')\n"
                "X, y = df[['city', 'rooms']], df['label']",
            ),
            (
                ("mlops:training",),
                "from sklearn.compose import make_column_transformer\n"
                "from sklearn.impute import SimpleImputer\n"
                "from sklearn.linear_model import LogisticRegression\n"
                "from sklearn.pipeline import make_pipeline\n"
                "from sklearn.preprocessing import OneHotEncoder\n"
                "encode = make_column_transformer(\n"
                "    (make_pipeline(SimpleImputer(strategy='most_frequent'),\n"
                "                   OneHotEncoder(handle_unknown='ignore')), ['city']),\n"
                "    remainder='passthrough')\n"
                "model = make_pipeline(encode, LogisticRegression()).fit(X, y)\n"
                "import mlflow\nmlflow.log_metric('accuracy', model.score(X, y))",
            ),
            (("mlops:export",), "import joblib\njoblib.dump(model, MODEL_OUTPUT_PATH)"),
        ]
    )
    state = run_notebook(shared_worker, make_repo, {"train.ipynb": notebook, "houses.csv": csv})
    assert state["status"] == "success", state

    # Loaded as a model server loads it: signature from the MLmodel, warmed with its example.
    mlflow.set_tracking_uri(shared_worker.mlflow_uri)  # as the model server does at start
    mlflow.set_registry_uri(shared_worker.mlflow_uri)
    with (
        tempfile.TemporaryDirectory() as cache,
        closing(
            load_version(name, state["model_version"], shared_worker.mlflow_uri, Path(cache))
        ) as served,
    ):
        signature = served.features
        assert signature.names == ("city", "rooms")
        assert signature.kind(0) == "string" and signature.kind(1) == "number"
        rows = rows_from_body(
            {"records": [{"city": "paris", "rooms": 1}, {"city": "nice", "rooms": 1}]}, signature
        )
        assert served.predict(rows).predictions == ["big", "small"]


def test_a_name_defined_only_in_a_skipped_cell_is_pointed_at(
    shared_worker: WorkerGroup, make_repo
) -> None:
    """Imports in an untagged first cell work in Jupyter and fail in the pipeline: say where."""
    name = unique_model_name("untagged-import")
    notebook = build_notebook(
        [
            ((), "%matplotlib inline\nimport numpy as np"),
            (("mlops:config",), f'MODEL_NAME = "{name}"\nVERSION = "1"'),
            (("mlops:preprocessing",), "X = np.eye(2)"),
            (("mlops:training",), "model = None"),
            (("mlops:export",), "pass"),
        ]
    )
    state = run_notebook(shared_worker, make_repo, {"train.ipynb": notebook})
    assert state["status"] == "failed"
    _, error = state["phases"]["execute"]
    assert error.startswith(
        "cell 3 (mlops:preprocessing) raised NameError: name 'np' is not defined "
        "('np' is defined in untagged cell 1, which the pipeline does not run"
    ), error


def test_a_model_exported_to_its_own_file_name_is_named_in_the_error(
    shared_worker: WorkerGroup, make_repo
) -> None:
    state = run_notebook(
        shared_worker,
        make_repo,
        {
            "nb/train.ipynb": small_notebook(unique_model_name("own-file")).replace(
                "MODEL_OUTPUT_PATH)", "'model.pkl')"
            ),
            "nb/old.pkl": "committed, not written by the run",
        },
        notebook_path="nb/train.ipynb",
    )
    assert state["status"] == "failed"
    _, error = state["phases"]["register"]
    assert error == (
        "the notebook did not write a model to MODEL_OUTPUT_PATH "
        "(export it with joblib.dump(model, MODEL_OUTPUT_PATH)); "
        "it wrote model.pkl instead"
    )


FEATURES_MODULE = """
import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin


class AddRatio(BaseEstimator, TransformerMixin):
    def fit(self, X, y=None):
        return self

    def transform(self, X):
        X = np.asarray(X, dtype=float)
        return np.column_stack([X, X[:, 0] / (X[:, 1] + 1.0)])


def squash(X):
    return np.tanh(X)
"""


def test_code_imported_from_a_module_beside_the_notebook_travels_with_the_model(
    shared_worker: WorkerGroup, make_repo
) -> None:
    """Regression: the model referred to `features.AddRatio` by name, so a model server (which
    has no checkout) failed with "No module named 'features'"; and with a custom first step
    nothing tells the row width, so its guessed warm-up row failed the load too."""
    name = unique_model_name("helper-module")
    notebook = small_notebook(
        name,
        training=(
            "from sklearn.pipeline import make_pipeline\n"
            "from sklearn.preprocessing import FunctionTransformer\n"
            "from features import AddRatio, squash\n"
            "model = make_pipeline(AddRatio(), FunctionTransformer(squash), model).fit(X, y)\n"
        ),
    )
    state = run_notebook(
        shared_worker,
        make_repo,
        {"ml/train.ipynb": notebook, "ml/features.py": FEATURES_MODULE},
        notebook_path="ml/train.ipynb",
    )
    assert state["status"] == "success", state
    assert "features" not in sys.modules  # this process cannot import the repository's module
    mlflow.set_tracking_uri(shared_worker.mlflow_uri)
    mlflow.set_registry_uri(shared_worker.mlflow_uri)
    with (
        tempfile.TemporaryDirectory() as cache,
        closing(
            load_version(name, state["model_version"], shared_worker.mlflow_uri, Path(cache))
        ) as served,
    ):
        assert served.features.count is None
        assert served.predict([[0.0, 1.0], [1.0, 0.0]]).predictions == [0, 1]


def test_a_model_class_defined_in_a_cell_is_explained(
    shared_worker: WorkerGroup, make_repo
) -> None:
    """A class written in a cell pickles by reference to the kernel's `__main__`: say so."""
    notebook = small_notebook(
        unique_model_name("cell-class"),
        training=(
            "class Majority:\n"
            "    def predict(self, rows):\n"
            "        return [0 for _ in rows]\n"
            "model = Majority()\n"
        ),
    )
    state = run_notebook(shared_worker, make_repo, {"train.ipynb": notebook})
    assert state["status"] == "failed"
    _, error = state["phases"]["register"]
    assert error == (
        "the model file cannot be loaded: it refers to 'Majority', defined in a notebook cell, "
        "which exists only in that kernel: use scikit-learn's own estimators, or define it in a "
        "module committed beside the notebook and import it"
    )
