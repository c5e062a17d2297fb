"""The shipped example notebooks run end to end through a real worker, kernel and MLflow."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import mlflow
import nbformat
from mlflow import MlflowClient
from mlflow.models import Model

from mlops_core.database import session_scope
from mlops_core.log_archive import stored_log
from tests.pipeline.conftest import (
    NOTEBOOKS,
    WorkerGroup,
    create_pipeline,
    log_events,
    notebook_source,
    small_notebook,
    unique_model_name,
    wait_finished,
)
from tests.support.processes import VENV_BIN


def test_iris_example_registers_a_version_with_metrics_notebook_and_log(
    shared_worker: WorkerGroup, make_repo, tmp_path: Path
) -> None:
    name = unique_model_name("iris")
    repo = make_repo()
    sha = repo.commit(
        {"notebooks/train.ipynb": notebook_source(NOTEBOOKS / "iris_classifier.ipynb", name)}
    )
    pipeline_id = create_pipeline(
        shared_worker.database_url, repo, commit_sha=sha, notebook_path="notebooks/train.ipynb"
    )
    shared_worker.send(pipeline_id)
    state = wait_finished(shared_worker.database_url, pipeline_id)

    assert state["status"] == "success", state
    assert state["attempts"] == 1
    assert {phase: s for phase, (s, _) in state["phases"].items()} == {
        "fetch": "success",
        "validate": "success",
        "environment": "skipped",  # no requirements.txt beside the notebook
        "execute": "success",
        "register": "success",
        "deploy": "skipped",
    }
    # Serving is tested elsewhere; this worker runs with AUTO_DEPLOY_ON_SUCCESS=false.
    assert state["phases"]["deploy"][1].startswith("AUTO_DEPLOY_ON_SUCCESS is off")
    assert state["model_name"] == name and state["model_version"] == "1"
    assert state["metrics"]["accuracy"] >= 0.9 and "f1_macro" in state["metrics"]
    assert state["params"]["notebook"] == {
        "MODEL_NAME": name,
        "VERSION": "1.0.0",
        "N_ESTIMATORS": 100,
        "MAX_DEPTH": 5,
        "RANDOM_STATE": 42,
    }
    assert state["params"]["gate"] == {"metric": "accuracy", "threshold": 0.8, "direction": "max"}

    client = MlflowClient(shared_worker.mlflow_uri)
    version = client.get_model_version(name, "1")
    assert version.tags["commit"] == sha
    assert version.tags["pipeline_id"] == str(pipeline_id)
    assert version.tags["version"] == "1.0.0"
    assert version.tags["branch"] == "main" and version.tags["repo"] == repo.url
    run = client.get_run(state["mlflow_run_id"])
    assert run.info.status == "FINISHED"
    assert run.data.metrics["accuracy"] == state["metrics"]["accuracy"]
    assert run.data.params["N_ESTIMATORS"] == "100"
    assert run.data.params["mlops.gate_metric"] == "accuracy"
    executed_path = client.download_artifacts(
        run.info.run_id, "notebook/executed.ipynb", str(tmp_path)
    )
    executed = nbformat.read(executed_path, as_version=4)
    exploration = [
        c for c in executed.cells if c.cell_type == "code" and not c.metadata.get("tags")
    ]
    assert exploration and all(not c.outputs for c in exploration), "untagged cells must not run"
    assert any(
        "accuracy=" in "".join(o.get("text", ""))
        for c in executed.cells
        for o in c.get("outputs", [])
    )

    # The registered RandomForest loads back through MLflow and predicts by feature name.
    import mlflow.pyfunc
    import pandas as pd

    mlflow.set_tracking_uri(shared_worker.mlflow_uri)
    model = mlflow.pyfunc.load_model(f"models:/{name}/1")
    row = pd.DataFrame(
        [[5.1, 3.5, 1.4, 0.2]], columns=model.metadata.get_input_schema().input_names()
    )
    assert list(model.predict(row)) == [0]

    events = log_events(shared_worker.redis_url, pipeline_id)
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    texts = [e.text for e in events]
    # `mlops run`, the installed command, runs the same notebook to the pipeline's metrics and
    # cells (tests/pipeline/test_cli_run.py covers the command itself).
    local = tmp_path / "laptop" / "train.ipynb"
    local.parent.mkdir()
    local.write_text(notebook_source(NOTEBOOKS / "iris_classifier.ipynb", name))
    ran = subprocess.run(
        [str(VENV_BIN / "mlops"), "run", str(local), "--json", "-o", str(tmp_path / "run")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert ran.returncode == 0, ran.stdout + ran.stderr
    local_events = [json.loads(line) for line in ran.stdout.splitlines()]
    assert local_events[-1]["metrics"] == state["metrics"]

    def cells(lines: list[tuple[str, str, int | None]]) -> list[tuple[str, str, int | None]]:
        """Cell markers (durations left out) and cell output, as (stream, text, cell)."""
        return [
            (stream, re.sub(r" in [0-9.]+ s$", "", text), cell)
            for stream, text, cell in lines
            if cell is not None or text.startswith(("▶", "■"))
        ]

    pipeline_cells = cells([(e.stream, e.text, e.cell) for e in events if e.phase == "execute"])
    assert pipeline_cells and pipeline_cells == cells(
        [(e["stream"], e["text"], e["cell"]) for e in local_events if e["phase"] == "execute"]
    )
    assert any(e.phase == "execute" and e.cell is not None and "started" in e.text for e in events)
    assert any(e.stream == "stdout" and "loaded 150 rows" in e.text for e in events)
    assert not any("without encryption" in t for t in texts)
    assert not any("IProgress not found" in t for t in texts), "tqdm widget noise in the log"
    assert events[-1].stream == "status" and events[-1].status == "success"
    with session_scope(shared_worker.database_url) as session:
        stored = stored_log(session, pipeline_id, limit=100000)
        assert [line.text for line in stored] == texts


def test_regression_and_csv_examples_run_side_by_side(
    shared_worker: WorkerGroup, make_repo
) -> None:
    diabetes, wine = unique_model_name("diabetes"), unique_model_name("wine")
    repo = make_repo()
    sha = repo.commit(
        {
            "diabetes.ipynb": notebook_source(NOTEBOOKS / "diabetes_regression.ipynb", diabetes),
            "ml/wine.ipynb": notebook_source(NOTEBOOKS / "wine_from_csv.ipynb", wine),
            "ml/wine.csv": (NOTEBOOKS / "wine.csv").read_bytes(),
        }
    )
    ids = [
        create_pipeline(shared_worker.database_url, repo, commit_sha=sha, notebook_path=path)
        for path in ("diabetes.ipynb", "ml/wine.ipynb")
    ]
    for pipeline_id in ids:
        shared_worker.send(pipeline_id)
    first, second = (wait_finished(shared_worker.database_url, i) for i in ids)

    assert first["status"] == "success", first
    assert first["params"]["gate"] == {"metric": "rmse", "threshold": 70.0, "direction": "min"}
    assert 30 < first["metrics"]["rmse"] < 70 and "r2" in first["metrics"]
    assert second["status"] == "success", second
    assert second["metrics"]["accuracy"] > 0.9
    # The two ran at the same time on the worker's two processes.
    assert (
        second["started_at"] < first["finished_at"] and first["started_at"] < second["finished_at"]
    )
    client = MlflowClient(shared_worker.mlflow_uri)
    assert client.get_model_version(wine, "1").tags["commit"] == sha
    assert client.get_model_version(diabetes, "1").tags["pipeline_id"] == str(ids[0])


def test_a_notebook_choosing_its_own_experiment_still_logs_into_the_pipeline_run(
    shared_worker: WorkerGroup, make_repo
) -> None:
    """Regression: `mlflow.set_experiment(...)` used to make every later log call raise."""
    name = unique_model_name("own-exp")
    experiment = f"team-{name}"
    repo = make_repo()
    notebook = small_notebook(
        name,
        preprocessing=f'import mlflow\nmlflow.set_experiment("{experiment}")\n',
        evaluation="mlflow.log_param('solver', 'lbfgs')\n",
    )
    sha = repo.commit({"train.ipynb": notebook})
    pipeline_id = create_pipeline(shared_worker.database_url, repo, commit_sha=sha)
    shared_worker.send(pipeline_id)
    state = wait_finished(shared_worker.database_url, pipeline_id)

    assert state["status"] == "success", state
    assert state["metrics"]["accuracy"] == 1.0
    run = MlflowClient(shared_worker.mlflow_uri).get_run(state["mlflow_run_id"])
    assert run.data.params["solver"] == "lbfgs"
    found = MlflowClient(shared_worker.mlflow_uri).get_experiment(run.info.experiment_id)
    assert found.name == experiment


def test_the_dataframe_pipeline_example_logs_from_its_own_run_block_with_feature_names(
    shared_worker: WorkerGroup, make_repo
) -> None:
    """The JupyterLab-style example: a Pipeline on a DataFrame, `with mlflow.start_run():`."""
    name = unique_model_name("cancer")
    repo = make_repo()
    sha = repo.commit(
        {"cancer.ipynb": notebook_source(NOTEBOOKS / "breast_cancer_pipeline.ipynb", name)}
    )
    pipeline_id = create_pipeline(
        shared_worker.database_url, repo, commit_sha=sha, notebook_path="cancer.ipynb"
    )
    shared_worker.send(pipeline_id)
    state = wait_finished(shared_worker.database_url, pipeline_id)

    assert state["status"] == "success", state
    assert state["params"]["notebook"]["C"] == 0.5
    assert state["metrics"]["accuracy"] > 0.9 and {"f1", "roc_auc"} <= set(state["metrics"])
    client = MlflowClient(shared_worker.mlflow_uri)
    assert client.get_run(state["mlflow_run_id"]).data.params["solver"] == "lbfgs"
    mlflow.set_tracking_uri(shared_worker.mlflow_uri)  # Model.load resolves models:/ URIs
    mlflow.set_registry_uri(shared_worker.mlflow_uri)
    signature = Model.load(f"models:/{name}/{state['model_version']}").signature
    assert signature is not None
    assert signature.inputs.input_names()[:2] == ["mean radius", "mean texture"]
