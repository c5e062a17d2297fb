"""GitHub in both directions through the real stack: backend, Celery worker, kernel, MLflow.

A local server stands in for GitHub (its REST API and git over https, tests/support/github_api.py):
the repository is registered through the backend (which creates the webhook there), runs start
from a signed push and from POST /repos/{id}/trigger at an older commit with a parameter, and the
backend posts each pipeline's commit statuses back, through a status endpoint that fails for a
while.
"""

from __future__ import annotations

import json
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from mlflow import MlflowClient

from backend.app import create_app
from mlops_core.database import upgrade_database
from mlops_core.settings import Settings
from tests.conftest import TEST_ENCRYPTION_KEY
from tests.pipeline.conftest import (
    GitRepo,
    WorkerGroup,
    build_notebook,
    redis_db_url,
    start_worker,
    unique_model_name,
    wait_finished,
)
from tests.pipeline.git_http_server import TlsCertificate
from tests.support.github import delivery, push_payload, random_sha
from tests.support.github_api import ADMIN_TOKEN, FakeGitHub, fake_github_tokens
from tests.support.processes import free_port, wait_for

PUBLIC_BASE_URL = "https://mlops.example.com"
NOTEBOOK = "notebooks/train.ipynb"


def notebook(model_name: str, evaluation: str) -> str:
    """Config, then the papermill `parameters` cell (C), then the pipeline's cells."""
    return build_notebook(
        [
            (
                ("mlops:config",),
                f'MODEL_NAME = "{model_name}"\nVERSION = "1.0"\nGATE_THRESHOLD = 0.99',
            ),
            (("parameters",), 'C = 1.0\nMODEL_OUTPUT_PATH = "model.joblib"'),
            (
                ("mlops:preprocessing",),
                "X = [[0.0, 1.0], [1.0, 0.0], [0.0, 0.9], [1.0, 0.1]]\ny = [0, 1, 0, 1]",
            ),
            (
                ("mlops:training",),
                "from sklearn.linear_model import LogisticRegression\n"
                "model = LogisticRegression(C=C).fit(X, y)",
            ),
            (("mlops:evaluation",), "import mlflow\n" + evaluation),
            (("mlops:export",), "import joblib\njoblib.dump(model, MODEL_OUTPUT_PATH)"),
        ]
    )


@pytest.fixture
def github(
    tmp_path: Path, tls_certificate: TlsCertificate, monkeypatch: pytest.MonkeyPatch
) -> Iterator[FakeGitHub]:
    """GitHub, with the certificate the worker's git trusts; the backend trusts it too."""
    monkeypatch.setenv("SSL_CERT_FILE", str(tls_certificate.cert_path))
    with FakeGitHub(tmp_path / "github", tls_certificate, tokens=fake_github_tokens()) as fake:
        yield fake


@pytest.fixture
def worker(
    tmp_path: Path, redis_url: str, mlflow_uri: str, tls_certificate: TlsCertificate
) -> Iterator[WorkerGroup]:
    """A worker of its own (own database, Redis db 15) serving the deploy gate as deployed."""
    database_url = f"sqlite:///{tmp_path / 'mlops.db'}"
    upgrade_database(database_url)
    group = start_worker(
        tmp_path,
        redis_url=redis_db_url(redis_url, 15),
        database_url=database_url,
        mlflow_uri=mlflow_uri,
        concurrency=2,
        extra_env={
            "GIT_SSL_CAINFO": str(tls_certificate.cert_path),
            "CELL_TIMEOUT_SECONDS": "120",
            "PIPELINE_TIMEOUT_SECONDS": "600",
        },
        name="github",
    )
    yield group
    group.stop()


@pytest.fixture
def backend(worker: WorkerGroup, github: FakeGitHub) -> Iterator[TestClient]:
    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        database_url=worker.database_url,
        redis_url=worker.redis_url,
        mlflow_tracking_uri=worker.mlflow_uri,
        model_server_url=f"http://127.0.0.1:{free_port()}",
        encryption_key=TEST_ENCRYPTION_KEY,
        public_base_url=PUBLIC_BASE_URL,
        github_api_url=github.api_url,
        allow_private_repo_hosts=True,
        commit_status_interval_seconds=0.3,
    )
    with TestClient(create_app(settings)) as client:
        yield client


def publish(work: GitRepo, github: FakeGitHub, full_name: str) -> None:
    """Push the working repository's branch to the fake GitHub's bare repository."""
    bare = github.root / full_name
    if not bare.exists():
        bare.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(["git", "init", "--quiet", "--bare", str(bare)], check=True)
    work.git("push", "--quiet", str(bare), f"HEAD:refs/heads/{work.branch}")


def statuses(github: FakeGitHub, full_name: str, sha: str) -> list[tuple[str, str]]:
    return [(s["state"], s["description"]) for s in github.statuses_of(full_name, sha)]


def final_status(github: FakeGitHub, full_name: str, sha: str) -> list[tuple[str, str]]:
    """The statuses of a commit once the last one is not pending."""

    def done() -> list[tuple[str, str]] | None:
        posted = statuses(github, full_name, sha)
        return posted if posted and posted[-1][0] != "pending" else None

    return wait_for(done, 60, 0.3, f"the final status of {sha[:12]}")


def test_trigger_at_an_older_commit_with_a_parameter_and_a_failing_push_report_to_github(
    tmp_path: Path, github: FakeGitHub, backend: TestClient, worker: WorkerGroup
) -> None:
    full_name = f"octo-org/roundtrip-{uuid.uuid4().hex[:8]}"
    model = unique_model_name("roundtrip")
    work = GitRepo(tmp_path / "work")
    evaluation = "mlflow.log_metric('accuracy', 0.5)\nmlflow.log_metric('c_used', C)"
    older = work.commit({NOTEBOOK: notebook(model, evaluation)})
    head = work.commit(
        {NOTEBOOK: notebook(model, "raise ValueError('labels do not match')")}, "break it"
    )
    publish(work, github, full_name)

    created = backend.post(
        "/repos",
        json={
            "github_url": github.repo_url(full_name),
            "notebook_path": NOTEBOOK,
            "github_token": ADMIN_TOKEN,
        },
    ).json()
    assert created["webhook"]["created"] is True, created
    repo_id = created["id"]

    # GitHub answers the next statuses with 502 for a while: nothing of it reaches a pipeline.
    github.fail_next(3, 502)
    triggered = backend.post(
        f"/repos/{repo_id}/trigger", json={"commit": older, "parameters": {"C": 0.25}}
    )
    assert triggered.status_code == 202, triggered.text
    payload = push_payload(github.repo_url(full_name), after=head, modified=[NOTEBOOK])
    sent = delivery(payload, created["webhook_secret"])
    pushed = backend.post("/webhook/github", content=sent.body, headers=sent.headers)
    assert pushed.status_code == 202, pushed.text
    unknown = random_sha()
    assert backend.post(f"/repos/{repo_id}/trigger", json={"commit": unknown}).status_code == 202

    run = wait_finished(worker.database_url, triggered.json()["pipeline_id"], timeout=240)
    assert run["status"] == "success", run
    assert run["commit_sha"] == older
    assert run["metrics"]["c_used"] == 0.25  # the parameter reached the notebook
    mlflow = MlflowClient(worker.mlflow_uri)
    assert mlflow.get_run(run["mlflow_run_id"]).data.params["C"] == "0.25"
    version = mlflow.get_model_version(model, run["model_version"])
    assert json.loads(version.tags["mlops.parameters"]) == {"C": 0.25}
    assert final_status(github, full_name, older)[-1] == (
        "success",
        f"v{run['model_version']} registered, not served: "
        "gate accuracy >= 0.99 failed: accuracy = 0.5",
    )
    pipeline = backend.get(f"/pipelines/{triggered.json()['pipeline_id']}").json()
    assert pipeline["parameters"] == {"C": 0.25}

    failed = wait_finished(worker.database_url, pushed.json()["pipeline_id"], timeout=240)
    assert failed["status"] == "failed"
    assert final_status(github, full_name, head)[-1] == (
        "failure",
        "execute: cell 5 (mlops:evaluation) raised ValueError: labels do not match",
    )
    assert final_status(github, full_name, unknown)[-1][1].startswith(
        f"fetch: commit {unknown} not found in repository"
    )
    assert [call.status for call in github.calls if "/statuses/" in call.path][:3] == [502] * 3

    def all_posted() -> list[dict[str, Any]] | None:
        shown = backend.get(f"/pipelines/{pushed.json()['pipeline_id']}").json()
        rows = shown["commit_statuses"]
        return rows if rows and rows[-1]["delivery"] == "posted" else None

    rows = wait_for(all_posted, 20, 0.3, "the push's statuses on its pipeline")
    assert (
        rows[-1]["target_url"] == f"{PUBLIC_BASE_URL}/ui/pipelines/{pushed.json()['pipeline_id']}"
    )
