"""Several model-server replicas follow the registry: deploy, rollback, delete, restart, failure."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import httpx
import mlflow
import mlflow.sklearn
import pytest
import redis
from mlflow import MlflowClient
from sklearn.dummy import DummyRegressor

from mlops_core.model_events import (
    DeployWaitError,
    ModelEvent,
    announce,
    replica_versions,
    replicas_key,
    wait_until_loaded,
)
from mlops_core.model_registry import clear_served_version, set_served_version
from tests.serving.conftest import ModelServer, iris_like, register_version, unique
from tests.support.processes import wait_for
from tests.support.services import MlflowServer


def constant_model(value: float) -> DummyRegressor:
    """A model whose every prediction is `value`, so a response shows which version answered."""
    x, y = iris_like()
    return DummyRegressor(strategy="constant", constant=value).fit(x, y)


def predict(server: ModelServer, name: str) -> httpx.Response:
    return httpx.post(f"{server.url}/predict/{name}", json={"data": [[1, 2, 3, 4]]}, timeout=10)


@pytest.fixture(scope="module")
def versions(registry: MlflowClient, serving_alias: str) -> tuple[str, list[str]]:
    x, _ = iris_like()
    name = unique("replicated")
    registered = [register_version(constant_model(float(i)), x, name) for i in (1, 2, 3)]
    assert registered == ["1", "2", "3"]
    set_served_version(registry, name, "1", serving_alias)
    return name, registered


def test_replicas_converge_after_deploy_rollback_delete_and_restart(
    versions: tuple[str, list[str]],
    start_server: Callable[..., ModelServer],
    registry: MlflowClient,
    redis_client: redis.Redis,
    serving_alias: str,
    move_alias: Callable[[str, str], None],
) -> None:
    name, _ = versions
    # A long reconcile interval: only the announcements can make these replicas act quickly.
    a = start_server("replica-a", MODEL_RECONCILE_INTERVAL_SECONDS="600")
    b = start_server("replica-b", MODEL_RECONCILE_INTERVAL_SECONDS="600")
    for server in (a, b):
        assert server.served()[name] == "1"  # loaded at start from the alias
    assert predict(a, name).json()["predictions"] == [1.0]
    assert replica_versions(redis_client, serving_alias, name, 3) == {
        "replica-a": "1",
        "replica-b": "1",
    }

    move_alias(name, "2")  # deploy
    for server in (a, b):
        server.wait_serving(name, "2", timeout=20)
        answer = predict(server, name).json()
        assert (answer["predictions"], answer["model_version"]) == ([2.0], "2")

    move_alias(name, "1")  # rollback
    for server in (a, b):
        server.wait_serving(name, "1", timeout=20)

    clear_served_version(registry, name, serving_alias)  # delete: stop serving
    announce(
        redis_client, ModelEvent(action="delete", model=name, version=None, alias=serving_alias)
    )
    for server in (a, b):
        server.wait_serving(name, None, timeout=20)
        assert predict(server, name).status_code == 404
    assert replica_versions(redis_client, serving_alias, name, 3) == {}

    # Replica b dies; the served version changes while it is down; it comes back on version 3.
    b.kill()
    move_alias(name, "3")
    a.wait_serving(name, "3", timeout=20)
    # a's heartbeat drops the report b can no longer refresh.
    wait_for(
        lambda: redis_client.hkeys(replicas_key(serving_alias, name)) == [b"replica-a"],
        20,
        what="replica-b's stale report pruned",
    )
    b.start()
    assert b.served()[name] == "3"
    assert predict(b, name).json()["predictions"] == [3.0]
    loaded_by = wait_until_loaded(
        redis_client, serving_alias, name, "3", timeout_seconds=5, stale_after_seconds=3
    )
    assert loaded_by in {"replica-a", "replica-b"}


def test_missed_announcement_heals_by_reconcile(
    versions: tuple[str, list[str]],
    start_server: Callable[..., ModelServer],
    registry: MlflowClient,
    serving_alias: str,
    move_alias: Callable[[str, str], None],
) -> None:
    name, _ = versions
    move_alias(name, "2")
    server = start_server("replica-reconciling", MODEL_RECONCILE_INTERVAL_SECONDS="1")
    assert server.served()[name] == "2"
    set_served_version(registry, name, "1", serving_alias)  # no announcement at all
    server.wait_serving(name, "1", timeout=15)


def test_version_that_fails_to_load_leaves_the_old_one_serving(
    versions: tuple[str, list[str]],
    start_server: Callable[..., ModelServer],
    registry: MlflowClient,
    redis_client: redis.Redis,
    serving_alias: str,
    move_alias: Callable[[str, str], None],
    mlflow_server: MlflowServer,
) -> None:
    name, _ = versions
    move_alias(name, "1")
    x, _ = iris_like()
    with mlflow.start_run():
        info = mlflow.sklearn.log_model(
            constant_model(9.0),
            name="model",
            input_example=x[:2],
            pip_requirements=["scikit-learn"],
            serialization_format=mlflow.sklearn.SERIALIZATION_FORMAT_CLOUDPICKLE,
        )
    broken = str(mlflow.register_model(info.model_uri, name).version)
    corrupt_model_files(Path(mlflow_server.workdir), info.model_id)

    server = start_server("replica-failing", MODEL_RECONCILE_INTERVAL_SECONDS="600")
    assert server.served()[name] == "1"
    subscription = redis_client.pubsub(ignore_subscribe_messages=True)
    subscription.subscribe("mlops:model-loaded")
    move_alias(name, broken)
    with pytest.raises(DeployWaitError, match=f"failed to load {name} version {broken}"):
        wait_until_loaded(
            redis_client,
            serving_alias,
            name,
            broken,
            timeout_seconds=30,
            stale_after_seconds=3,
            subscription=subscription,
        )
    # Every replica on this Redis follows the alias, so the failure report that ended the wait
    # may come from another test's replica: wait for this one's own verdict.
    row = wait_for(
        lambda: (r := server.models()[name])["last_error"] and r,
        30,
        what=f"replica-failing to report its failed load of {name} v{broken}",
    )
    assert row["version"] == "1"
    assert row["last_error"]["version"] == broken
    assert row["last_error"]["error"]
    assert predict(server, name).json()["predictions"] == [1.0]
    set_served_version(registry, name, "1", serving_alias)


def corrupt_model_files(mlflow_workdir: Path, model_id: str) -> None:
    """Overwrite a logged model's serialized estimator, as a bad disk or upload would."""
    hits = [
        path
        for path in (mlflow_workdir / "artifacts").rglob("*")
        if model_id in str(path) and path.is_file() and path.name.startswith("model.")
    ]
    assert hits, f"no artifact files found for {model_id}"
    for path in hits:
        path.write_bytes(b"this is not a model")
