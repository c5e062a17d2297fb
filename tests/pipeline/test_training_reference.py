"""A notebook's training rows (REFERENCE_DATA_PATH) become its version's drift reference."""

from __future__ import annotations

from mlflow import MlflowClient

from backend.drift import check
from mlops_core.database import session_scope
from mlops_core.schema import ModelReference
from mlops_core.settings import Settings
from tests.pipeline.conftest import WorkerGroup, small_notebook, unique_model_name
from tests.pipeline.test_notebook_styles import run_notebook


def test_training_rows_saved_by_the_notebook_are_kept_with_the_version(
    shared_worker: WorkerGroup, make_repo
) -> None:
    name = unique_model_name("referenced")
    notebook = small_notebook(
        name,
        evaluation=(
            "import pandas as pd\npd.DataFrame(X).to_csv(REFERENCE_DATA_PATH, index=False)"
        ),
    )
    state = run_notebook(shared_worker, make_repo, {"train.ipynb": notebook})
    assert state["status"] == "success", state
    version = state["model_version"]

    with session_scope(shared_worker.database_url) as session:
        kept = session.get(ModelReference, (name, version))
        assert kept is not None
        assert kept.rows == [
            {"0": 0.0, "1": 1.0},
            {"0": 1.0, "1": 0.0},
            {"0": 0.0, "1": 0.9},
            {"0": 1.0, "1": 0.1},
        ]
    client = MlflowClient(shared_worker.mlflow_uri)
    run_id = client.get_model_version(name, version).run_id
    assert [a.path for a in client.list_artifacts(run_id, "reference")] == [
        "reference/reference.csv"
    ]
    settings = Settings(_env_file=None, database_url=shared_worker.database_url)  # type: ignore[call-arg]
    found = check(settings, name, version)
    assert (found.reference_source, found.reference_rows) == ("training", 4)
