"""MLflow on S3-compatible storage, end to end: push → register → serve with no local artifacts.

A real S3 HTTP server (moto's server mode) holds MLflow's artifacts
(`--artifacts-destination s3://...`, MLFLOW_S3_ENDPOINT_URL and AWS_* in MLflow's environment
only, as docker-compose.yml and deploy/k8s give them). A worker runs a pushed notebook, the
version is registered and deployed, and a model server loads it: the model's files exist only in
the bucket, so the served version came from there. Neither the worker nor the model server ever
holds the storage credentials (MLflow serves the artifacts), and no log shows the secret key.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from mlops_core.database import upgrade_database
from tests.pipeline.conftest import (
    GitRepo,
    create_pipeline,
    redis_db_url,
    small_notebook,
    start_worker,
    unique_model_name,
    wait_finished,
)
from tests.serving.conftest import ModelServer
from tests.support.s3_server import S3Server
from tests.support.services import MlflowServer

BUCKET = "mlflow-artifacts"


@pytest.fixture
def s3(tmp_path: Path) -> Iterator[S3Server]:
    server = S3Server(tmp_path / "s3").start()
    server.client().create_bucket(Bucket=BUCKET)
    yield server
    server.stop()


@pytest.fixture
def s3_mlflow(tmp_path: Path, s3: S3Server) -> Iterator[MlflowServer]:
    server = MlflowServer(
        tmp_path / "mlflow",
        artifacts_destination=f"s3://{BUCKET}/mlflow",
        env=s3.env,
    )
    server.start()
    yield server
    server.stop()


def test_pipeline_artifacts_land_in_the_bucket_and_the_model_server_loads_them(
    tmp_path: Path, redis_url: str, s3: S3Server, s3_mlflow: MlflowServer
) -> None:
    alias = f"s3{uuid.uuid4().hex[:8]}"
    platform_env = {"SERVING_ALIAS": alias, "MODEL_HEARTBEAT_INTERVAL_SECONDS": "1"}
    queue_url = redis_db_url(redis_url, 8)
    model_server = ModelServer(
        env={
            "REDIS_URL": queue_url,
            "MLFLOW_TRACKING_URI": s3_mlflow.uri,
            "NO_PROXY": "127.0.0.1,localhost",
            **platform_env,
        },
        log_dir=tmp_path / "model-server",
        replica="s3-replica",
    ).start()
    database_url = f"sqlite:///{tmp_path / 'mlops.db'}"
    upgrade_database(database_url)
    worker = start_worker(
        tmp_path / "worker",
        redis_url=queue_url,
        database_url=database_url,
        mlflow_uri=s3_mlflow.uri,
        extra_env={
            **platform_env,
            "AUTO_DEPLOY_ON_SUCCESS": "true",
            "MIN_ACCURACY_THRESHOLD": "0.5",
            "MODEL_SERVER_URL": model_server.url,
            "CELL_TIMEOUT_SECONDS": "120",
            "PIPELINE_TIMEOUT_SECONDS": "600",
        },
        name="s3",
    )
    try:
        name = unique_model_name("s3-served")
        repo = GitRepo(tmp_path / "repo")
        commit = repo.commit({"train.ipynb": small_notebook(name)})
        pipeline_id = create_pipeline(database_url, repo, commit_sha=commit)
        worker.send(pipeline_id)
        state = wait_finished(database_url, pipeline_id, timeout=300)
        assert state["status"] == "success", state
        assert state["model_version"] == "1"

        # The model's files are in the bucket, and only there.
        keys = s3.keys(BUCKET)
        assert any(key.endswith("/MLmodel") for key in keys), keys
        assert any(key.endswith(".pkl") for key in keys), keys
        assert not (s3_mlflow.workdir / "artifacts").exists()

        # The model server loaded that version from them and answers with it.
        model_server.wait_serving(name, "1", timeout=60)
        answer = httpx.post(
            f"{model_server.url}/predict/{name}", json={"data": [[0.0, 1.0]]}, timeout=30
        )
        assert answer.status_code == 200, answer.text
        assert answer.json()["predictions"] == [0]

        # The storage secret stays in MLflow's environment: no log shows it.
        logs = [
            process.log_text()
            for process in (worker.process, model_server.process, s3_mlflow.process)
            if process is not None
        ]
        assert len(logs) == 3
        for log in logs:
            assert s3.secret_key not in log
            assert s3.access_key not in log
    finally:
        worker.stop()
        model_server.stop()
