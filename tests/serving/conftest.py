"""Fixtures for the serving tests: the session MLflow as registry, model-server processes.

Each test module serves under its own alias (SERVING_ALIAS), so model servers started here load
only that module's models even though MLflow and Redis are shared by the whole session.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import mlflow
import mlflow.sklearn
import numpy as np
import pytest
import redis
from mlflow import MlflowClient

from mlops_core.launch_commands import model_server_command
from mlops_core.model_events import ModelEvent, announce
from mlops_core.model_registry import registry_client, set_served_version
from tests.support.processes import ManagedProcess, free_port, wait_for, wait_http

REPO_ROOT = Path(__file__).resolve().parents[2]


def unique(prefix: str) -> str:
    """A registry name no other test uses (MLflow is shared by the session)."""
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="session")
def registry(mlflow_uri: str) -> MlflowClient:
    """A registry client; also points this process's mlflow fluent API at the session server."""
    os.environ.setdefault("NO_PROXY", "127.0.0.1,localhost")
    mlflow.set_tracking_uri(mlflow_uri)
    mlflow.set_registry_uri(mlflow_uri)
    return registry_client(mlflow_uri)


def register_version(
    estimator: Any,
    x: Any,
    name: str,
    *,
    metrics: dict[str, float] | None = None,
    tags: dict[str, str] | None = None,
    serialization: str = mlflow.sklearn.SERIALIZATION_FORMAT_CLOUDPICKLE,
) -> str:
    """Log `estimator` as an sklearn model in a run with `metrics` and register a version.

    cloudpickle, as the worker's register phase saves models (skops is slow to import and
    refuses tree models).
    """
    with mlflow.start_run():
        for key, value in (metrics or {}).items():
            mlflow.log_metric(key, value)
        info = mlflow.sklearn.log_model(
            estimator,
            name="model",
            input_example=x[:2],
            pip_requirements=["scikit-learn"],
            serialization_format=serialization,
        )
    version = mlflow.register_model(info.model_uri, name, tags=tags or {})
    return str(version.version)


@dataclass
class ModelServer:
    """A model-server replica: `python -m model_server.serve` (MODEL_SERVER_WORKERS processes)."""

    env: dict[str, str]
    log_dir: Path
    replica: str
    port: int = field(default_factory=free_port)
    process: ManagedProcess | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, wait: bool = True) -> ModelServer:
        self.process = ManagedProcess(
            model_server_command(self.port, log_level="warning"),
            env={**self.env, "MODEL_SERVER_REPLICA_ID": self.replica},
            log_path=self.log_dir / f"{self.replica}.log",
            cwd=REPO_ROOT,
        )
        if wait:
            wait_http(f"{self.url}/ready", timeout=90, process=self.process)
        return self

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()
            self.process = None

    def kill(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process = None

    @property
    def auth(self) -> dict[str, str]:
        """The Authorization header its PREDICT_TOKEN asks for (none when it has none)."""
        token = self.env.get("PREDICT_TOKEN")
        return {"Authorization": f"Bearer {token}"} if token else {}

    def served(self) -> dict[str, str | None]:
        """Model name → version this replica answers with right now."""
        body = httpx.get(f"{self.url}/models", headers=self.auth, timeout=5).json()
        return {row["name"]: row["version"] for row in body["models"] if row["version"]}

    def models(self) -> dict[str, dict[str, Any]]:
        body = httpx.get(f"{self.url}/models", headers=self.auth, timeout=5).json()
        return {row["name"]: row for row in body["models"]}

    def wait_serving(self, name: str, version: str | None, timeout: float = 30) -> None:
        wait_for(
            lambda: self.served().get(name) == version,
            timeout,
            0.1,
            f"{self.replica} serving {name} version {version}",
        )


@pytest.fixture(scope="module")
def serving_alias() -> str:
    return f"prod{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="module")
def server_env(redis_url: str, mlflow_uri: str, serving_alias: str) -> dict[str, str]:
    """Environment for model servers and for code under test in this module."""
    return {
        "REDIS_URL": redis_url,
        "MLFLOW_TRACKING_URI": mlflow_uri,
        "SERVING_ALIAS": serving_alias,
        "MODEL_RECONCILE_INTERVAL_SECONDS": "30",
        "MODEL_HEARTBEAT_INTERVAL_SECONDS": "1",
        "NO_PROXY": "127.0.0.1,localhost",
        "no_proxy": "127.0.0.1,localhost",
        "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
        # One process per server unless a test asks for more: each process loads every model.
        "MODEL_SERVER_WORKERS": "1",
    }


@pytest.fixture(scope="module")
def start_server(
    server_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Callable[..., ModelServer]]:
    """Start model-server replicas (stopped at the end of the module)."""
    started: list[ModelServer] = []
    log_dir = tmp_path_factory.mktemp("model-servers")

    def start(replica: str | None = None, wait: bool = True, **env: str) -> ModelServer:
        server = ModelServer(
            env={**server_env, **env},
            log_dir=log_dir,
            replica=replica or f"replica-{len(started) + 1}",
        )
        started.append(server)
        return server.start(wait=wait)

    yield start
    for server in started:
        server.stop()


@pytest.fixture(scope="module")
def redis_client(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


@pytest.fixture(scope="module")
def move_alias(
    registry: MlflowClient, redis_client: redis.Redis, serving_alias: str
) -> Callable[[str, str], None]:
    """Point the alias at a version and announce it, as the backend and worker do."""

    def move(name: str, version: str) -> None:
        set_served_version(registry, name, version, serving_alias)
        announce(
            redis_client,
            ModelEvent(action="deploy", model=name, version=version, alias=serving_alias),
        )

    return move


def iris_like(seed: int = 0, n: int = 150) -> tuple[np.ndarray, np.ndarray]:
    """A small 4-feature, 3-class dataset (deterministic)."""
    from sklearn.datasets import load_iris

    x, y = load_iris(return_X_y=True)
    rng = np.random.default_rng(seed)
    idx = rng.permutation(len(x))[:n]
    return x[idx], y[idx]
