"""Fixtures for the REST and webhook tests: the app in-process, a real backend process, a real
Celery worker, and a Redis of their own.

These tests put Celery messages on the broker; they use a Redis of their own (flushed before
each test) so that no message of theirs can reach a worker started by another test area on the
session Redis.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from fastapi.testclient import TestClient
from sqlalchemy import select

from backend.app import create_app
from mlops_core.database import session_scope
from mlops_core.launch_commands import BACKEND_APP, uvicorn_command, worker_command
from mlops_core.schema import Pipeline
from mlops_core.settings import Settings
from mlops_core.task_queue import PIPELINE_QUEUE
from tests.conftest import TEST_ENCRYPTION_KEY
from tests.pipeline.git_http_server import TlsCertificate
from tests.support.github import Delivery
from tests.support.github_api import FakeGitHub, fake_github_tokens
from tests.support.processes import ManagedProcess, free_port, wait_for, wait_http
from tests.support.services import RedisServer

REPO_ROOT = Path(__file__).resolve().parents[2]
PUBLIC_BASE_URL = "https://mlops.example.com"
NOTEBOOK = "notebooks/train.ipynb"


def dead_url() -> str:
    """An http URL nothing listens on (a part of the stack that is down)."""
    return f"http://127.0.0.1:{free_port()}"


def github_url() -> str:
    """A GitHub repository URL no other test registers."""
    return f"https://github.com/octo-org/iris-{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="package")
def api_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("api-redis"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def queue_redis_url(api_redis: RedisServer) -> str:
    """The tests' own Redis, emptied for this test."""
    client = redis.Redis.from_url(api_redis.url)
    client.flushall()
    client.close()
    return api_redis.url


def queued_messages(redis_url: str) -> int:
    """Celery messages waiting in the pipelines queue (a Redis list named after the queue)."""
    client = redis.Redis.from_url(redis_url)
    try:
        return int(client.llen(PIPELINE_QUEUE))
    finally:
        client.close()


@pytest.fixture
def make_settings(
    any_database_url: str, queue_redis_url: str, tmp_path: Path
) -> Callable[..., Settings]:
    """Settings for an in-process app; keyword arguments override fields."""

    def make(**overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "database_url": any_database_url,
            "redis_url": queue_redis_url,
            "mlops_home": tmp_path / "mlops-home",
            "allow_local_repos": True,
            "encryption_key": TEST_ENCRYPTION_KEY,
            "public_base_url": PUBLIC_BASE_URL,
            "requeue_interval_seconds": 0.3,
            "mlflow_tracking_uri": dead_url(),
            "model_server_url": dead_url(),
            # A GitHub serving no repository the tests register: nothing calls github.com.
            "github_api_url": dead_url().replace("http://", "https://") + "/api/v3",
            "api_token": None,
            "github_webhook_secret": None,
        }
        values.update(overrides)
        return Settings(_env_file=None, **values)  # type: ignore[call-arg]

    return make


@dataclass
class Api:
    """A TestClient on the app plus the helpers most tests need."""

    client: TestClient
    settings: Settings

    @property
    def database_url(self) -> str:
        return self.settings.database_url

    def register(self, url: str | None = None, **fields: Any) -> dict[str, Any]:
        """Register a repo (201 expected) and return the create response."""
        body = {"github_url": url or github_url(), **fields}
        response = self.client.post("/repos", json=body, headers=self.auth_headers())
        assert response.status_code == 201, response.text
        return response.json()

    def auth_headers(self) -> dict[str, str]:
        token = self.settings.api_token
        return {"Authorization": f"Bearer {token.get_secret_value()}"} if token else {}

    def deliver(self, delivery: Delivery) -> httpx.Response:
        return self.client.post("/webhook/github", content=delivery.body, headers=delivery.headers)

    def pipelines(self) -> list[Pipeline]:
        with session_scope(self.database_url) as session:
            return list(session.scalars(select(Pipeline).order_by(Pipeline.id)))

    def pipeline(self, pipeline_id: int) -> Pipeline:
        with session_scope(self.database_url) as session:
            row = session.get(Pipeline, pipeline_id)
            assert row is not None
            return row


@pytest.fixture
def make_api(make_settings: Callable[..., Settings]) -> Iterator[Callable[..., Api]]:
    """Start the app in-process (lifespan included) with settings overrides."""
    clients: list[TestClient] = []

    def make(**overrides: Any) -> Api:
        settings = make_settings(**overrides)
        client = TestClient(create_app(settings))
        client.__enter__()
        clients.append(client)
        return Api(client, settings)

    yield make
    for client in clients:
        client.__exit__(None, None, None)


@pytest.fixture
def api(make_api: Callable[..., Api]) -> Api:
    """The app with default test settings (no API token)."""
    return make_api()


@pytest.fixture
def start_worker(
    base_env: dict[str, str], tmp_path: Path
) -> Iterator[Callable[..., ManagedProcess]]:
    """Start real Celery worker processes (`celery -A worker.celery_app worker -Q pipelines`)."""
    started: list[ManagedProcess] = []

    def start(database_url: str, redis_url: str, **extra_env: str) -> ManagedProcess:
        name = f"api-{uuid.uuid4().hex[:6]}"
        process = ManagedProcess(
            worker_command(concurrency=2, node_name=f"{name}@%h"),
            env={
                **base_env,
                "DATABASE_URL": database_url,
                "REDIS_URL": redis_url,
                "MLFLOW_TRACKING_URI": dead_url(),
                **extra_env,
            },
            log_path=tmp_path / f"{name}.log",
            cwd=REPO_ROOT,
        )
        started.append(process)
        return process

    yield start
    for process in started:
        process.stop()


@dataclass
class LiveBackend:
    """A uvicorn process serving `backend.app:create_app --factory`, as deployed."""

    url: str
    process: ManagedProcess


@pytest.fixture
def start_backend(base_env: dict[str, str], tmp_path: Path) -> Iterator[Callable[..., LiveBackend]]:
    started: list[ManagedProcess] = []

    def start(**env: str) -> LiveBackend:
        port = free_port()
        process = ManagedProcess(
            uvicorn_command(BACKEND_APP, port, log_level="warning"),
            env={**base_env, "PUBLIC_BASE_URL": PUBLIC_BASE_URL, **env},
            log_path=tmp_path / f"backend-{port}.log",
            cwd=REPO_ROOT,
        )
        started.append(process)
        url = f"http://127.0.0.1:{port}"
        wait_http(f"{url}/health", 60, process)
        return LiveBackend(url, process)

    yield start
    for process in started:
        process.stop()


def wait_until_picked_up(database_url: str, ids: list[int], timeout: float) -> list[Pipeline]:
    """Wait until no pipeline of `ids` is still queued (a worker took each); return the rows."""

    def done() -> list[Pipeline] | None:
        with session_scope(database_url) as session:
            rows = list(session.scalars(select(Pipeline).where(Pipeline.id.in_(ids))))
        return rows if all(row.status != "queued" for row in rows) else None

    return wait_for(done, timeout, 0.2, f"{len(ids)} pipelines to leave 'queued'")


@pytest.fixture(scope="package")
def github_tls(tmp_path_factory: pytest.TempPathFactory) -> TlsCertificate:
    return TlsCertificate.create(tmp_path_factory.mktemp("github-tls"))


@pytest.fixture
def github(
    tmp_path: Path, github_tls: TlsCertificate, monkeypatch: pytest.MonkeyPatch
) -> Iterator[FakeGitHub]:
    """A fake GitHub (REST API and git), trusted by the backend's HTTP client (SSL_CERT_FILE)."""
    monkeypatch.setenv("SSL_CERT_FILE", str(github_tls.cert_path))
    with FakeGitHub(tmp_path / "github", github_tls, tokens=fake_github_tokens()) as fake:
        yield fake
