"""Two notebooks in one repository through the real stack (backend app with its periodic loops,
Celery worker, sandboxed kernels, MLflow): one signed push touching both runs two pipelines and
registers two models; the second notebook's cron schedule then runs the branch head."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from mlflow import MlflowClient
from sqlalchemy import select

from backend.app import create_app
from mlops_core.database import session_scope, upgrade_database
from mlops_core.pipeline_lease import db_now
from mlops_core.schema import Notebook, Pipeline
from mlops_core.settings import Settings
from tests.conftest import TEST_ENCRYPTION_KEY
from tests.pipeline.conftest import (
    GitRepo,
    WorkerGroup,
    redis_db_url,
    small_notebook,
    start_worker,
    unique_model_name,
    wait_finished,
)
from tests.support.github import delivery, push_payload
from tests.support.processes import free_port, wait_for

IRIS = "iris/train.ipynb"
WINE = "wine/train.ipynb"


@pytest.fixture
def worker(tmp_path: Path, redis_url: str, mlflow_uri: str) -> Iterator[WorkerGroup]:
    """A worker of its own (own database, Redis db 10): the backend's loops act on its rows."""
    database_url = f"sqlite:///{tmp_path / 'mlops.db'}"
    upgrade_database(database_url)
    group = start_worker(
        tmp_path,
        redis_url=redis_db_url(redis_url, 10),
        database_url=database_url,
        mlflow_uri=mlflow_uri,
        concurrency=2,
        extra_env={"AUTO_DEPLOY_ON_SUCCESS": "false", "CELL_TIMEOUT_SECONDS": "120"},
        name="notebooks",
    )
    yield group
    group.stop()


@pytest.fixture
def backend(worker: WorkerGroup) -> Iterator[TestClient]:
    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        database_url=worker.database_url,
        redis_url=worker.redis_url,
        mlflow_tracking_uri=worker.mlflow_uri,
        model_server_url=f"http://127.0.0.1:{free_port()}",
        encryption_key=TEST_ENCRYPTION_KEY,
        allow_local_repos=True,
        schedule_interval_seconds=0.3,
    )
    with TestClient(create_app(settings)) as client:
        yield client


def test_a_push_touching_two_notebooks_registers_two_models_and_a_schedule_runs_the_head(
    tmp_path: Path, worker: WorkerGroup, backend: TestClient
) -> None:
    iris_model, wine_model = unique_model_name("iris"), unique_model_name("wine")
    work = GitRepo(tmp_path / "repo")
    head = work.commit({IRIS: small_notebook(iris_model), WINE: small_notebook(wine_model)})
    created = backend.post(
        "/repos",
        json={
            "github_url": work.url,
            "notebooks": [{"notebook_path": IRIS}, {"notebook_path": WINE, "schedule": "@daily"}],
        },
    )
    assert created.status_code == 201, created.text
    repo = created.json()

    push = delivery(push_payload(work.url, after=head, added=[IRIS, WINE]), repo["webhook_secret"])
    answer = backend.post("/webhook/github", content=push.body, headers=push.headers)
    assert answer.status_code == 202, answer.text
    queued = {q["notebook_path"]: q["pipeline_id"] for q in answer.json()["pipelines"]}
    assert list(queued) == [IRIS, WINE]

    runs = {path: wait_finished(worker.database_url, pid, 240) for path, pid in queued.items()}
    for state in runs.values():
        assert state["status"] == "success", state["error"]
        assert state["commit_sha"] == head
    assert (runs[IRIS]["model_name"], runs[WINE]["model_name"]) == (iris_model, wine_model)
    mlflow = MlflowClient(worker.mlflow_uri)
    for model, path in ((iris_model, IRIS), (wine_model, WINE)):
        version = mlflow.get_model_version(model, runs[path]["model_version"])
        assert version.tags["notebook_path"] == path

    # The wine notebook's daily slot passes (as if it were midnight): one run of the head.
    later = work.commit({"wine/data.csv": "a,b\n1,2\n"}, "new data")
    with session_scope(worker.database_url) as session:
        notebook = session.scalars(select(Notebook).where(Notebook.notebook_path == WINE)).one()
        notebook.schedule_next_at = db_now(session).replace(tzinfo=UTC) - timedelta(minutes=1)

    def scheduled() -> int | None:
        with session_scope(worker.database_url) as session:
            return session.scalar(select(Pipeline.id).where(Pipeline.trigger == "schedule"))

    pipeline_id = wait_for(scheduled, 30, 0.2, "the scheduled pipeline")
    state = wait_finished(worker.database_url, pipeline_id, 240)
    assert state["status"] == "success", state["error"]
    assert state["commit_sha"] == later  # the branch head when it ran
    assert state["model_name"] == wine_model
    shown = backend.get(f"/pipelines/{pipeline_id}").json()
    assert (shown["trigger"], shown["notebook_path"]) == ("schedule", WINE)
    assert len(mlflow.search_model_versions(f"name = '{wine_model}'")) == 2
    assert len(mlflow.search_model_versions(f"name = '{iris_model}'")) == 1
