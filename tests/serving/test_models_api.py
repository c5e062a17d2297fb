"""The backend's models API: listing, deploy, rollback, delete, history and the predict proxy."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from fastapi.testclient import TestClient
from mlflow import MlflowClient
from mlflow.entities import Param
from sklearn.dummy import DummyClassifier

from backend.app import create_app
from mlops_core.deploy_gate import ServedVersion, evaluate_gate
from mlops_core.model_events import DeploymentAction
from mlops_core.model_registry import (
    TAG_GATE_VERDICT,
    clear_served_version,
    model_exists,
    served_version,
    set_served_version,
)
from mlops_core.notebook_contract import GateSettings
from mlops_core.settings import Settings
from tests.serving.conftest import ModelServer, iris_like, register_version, unique
from tests.support.processes import free_port

TOKEN = "models-api-test-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
ROW = [5.1, 3.5, 1.4, 0.2]
REPO_ROOT = Path(__file__).resolve().parents[2]


def constant_classifier(label: str) -> DummyClassifier:
    """Predicts `label` for every row, so a response shows which version answered."""
    x, _ = iris_like()
    return DummyClassifier(strategy="constant", constant=label).fit(x, [label] * len(x))


@pytest.fixture(scope="module")
def model(registry: MlflowClient, serving_alias: str) -> str:
    x, _ = iris_like()
    name = unique("api-model")
    for label, accuracy in (("one", 0.91), ("two", 0.93), ("three", 0.95)):
        register_version(
            constant_classifier(label),
            x,
            name,
            metrics={"accuracy": accuracy},
            tags={"commit": f"c0ffee-{label}", "pipeline_id": "4242", "branch": "main"},
        )
    set_served_version(registry, name, "1", serving_alias)
    return name


@pytest.fixture(scope="module")
def server(model: str, start_server: Callable[..., ModelServer]) -> ModelServer:
    server = start_server("models-api", MODEL_RECONCILE_INTERVAL_SECONDS="600")
    server.wait_serving(model, "1")
    return server


@pytest.fixture
def api(server: ModelServer, server_env: dict[str, str], database_url: str) -> Iterator[TestClient]:
    settings = Settings(
        database_url=database_url,
        redis_url=server_env["REDIS_URL"],
        mlflow_tracking_uri=server_env["MLFLOW_TRACKING_URI"],
        serving_alias=server_env["SERVING_ALIAS"],
        model_server_url=server.url,
        api_token=TOKEN,
        predict_max_body_bytes=2000,
        model_heartbeat_interval_seconds=1,
    )
    with TestClient(create_app(settings)) as client:
        yield client


def served_by_proxy(api: TestClient, name: str) -> dict[str, Any]:
    response = api.post(f"/models/{name}/predict", json={"data": [ROW]})
    assert response.status_code == 200, response.text
    return response.json()


def test_models_list_and_detail(api: TestClient, model: str, server: ModelServer) -> None:
    listing = {m["name"]: m for m in api.get("/models").json()}
    assert listing[model]["served_version"] == "1"
    detail = api.get(f"/models/{model}").json()
    assert detail["served_version"] == "1"
    assert [v["version"] for v in detail["versions"]] == ["3", "2", "1"]
    newest = detail["versions"][0]
    assert newest["metrics"] == {"accuracy": 0.95}
    assert newest["commit"] == "c0ffee-three"
    assert newest["pipeline_id"] == 4242
    assert newest["created_at"]
    assert [v["served"] for v in detail["versions"]] == [False, False, True]
    assert detail["replicas"] == {"models-api": "1"}
    # Registered without the worker's gate params; a NumPy example gives a count, no names.
    assert newest["gate"] is None and detail["gate"] is None
    assert (detail["features_version"], detail["feature_names"], detail["n_features"]) == (
        "1",
        None,
        4,
    )
    assert api.get("/models/no-such-model").status_code == 404


def test_deploy_rollback_delete_and_history(
    api: TestClient, model: str, server: ModelServer, registry: MlflowClient
) -> None:
    response = api.post(f"/models/{model}/deploy", json={"version": "3"}, headers=AUTH)
    assert response.status_code == 200, response.text
    assert response.json()["served_version"] == "3"
    assert response.json()["previous_version"] == "1"
    server.wait_serving(model, "3")
    assert served_by_proxy(api, model)["predictions"] == ["three"]

    # Without a version, rollback returns to what was served before, and toggles back.
    rolled = api.post(f"/models/{model}/rollback", headers=AUTH).json()
    assert (rolled["served_version"], rolled["previous_version"]) == ("1", "3")
    server.wait_serving(model, "1")
    assert served_by_proxy(api, model)["model_version"] == "1"
    rolled = api.post(f"/models/{model}/rollback", json={}, headers=AUTH).json()
    assert rolled["served_version"] == "3"
    rolled = api.post(f"/models/{model}/rollback", json={"version": 2}, headers=AUTH).json()
    assert rolled["served_version"] == "2"
    server.wait_serving(model, "2")

    assert (
        api.post(f"/models/{model}/rollback", json={"version": "99"}, headers=AUTH).status_code
        == 404
    )
    assert api.post(f"/models/{model}/deploy", json={}, headers=AUTH).status_code == 422
    assert (
        api.post(f"/models/{model}/deploy", json={"version": "abc"}, headers=AUTH).status_code
        == 422
    )
    assert api.post("/models/nope/deploy", json={"version": "1"}, headers=AUTH).status_code == 404

    deleted = api.delete(f"/models/{model}", headers=AUTH).json()
    assert (deleted["served_version"], deleted["purged"]) == (None, False)
    server.wait_serving(model, None)
    response = api.post(f"/models/{model}/predict", json={"data": [ROW]})
    assert response.status_code == 404  # the model server's answer, passed through
    assert api.get(f"/models/{model}").json()["served_version"] is None
    assert len(api.get(f"/models/{model}").json()["versions"]) == 3  # registry kept

    # After a delete, rollback brings back what was served.
    assert api.post(f"/models/{model}/rollback", headers=AUTH).json()["served_version"] == "2"
    server.wait_serving(model, "2")

    history = api.get(f"/models/{model}/history").json()
    assert [(h["action"], h["version"], h["previous_version"]) for h in history] == [
        ("rollback", "2", None),
        ("delete", None, "2"),
        ("rollback", "2", "3"),
        ("rollback", "3", "1"),
        ("rollback", "1", "3"),
        ("deploy", "3", "1"),
    ]
    assert {h["actor"] for h in history} == {"api"}
    assert all(h["created_at"] for h in history)


def test_state_changes_need_the_api_token(api: TestClient, model: str) -> None:
    for method, path, body in (
        ("post", f"/models/{model}/deploy", {"version": "1"}),
        ("post", f"/models/{model}/rollback", {"version": "1"}),
        ("delete", f"/models/{model}", None),
    ):
        response = api.request(method, path, json=body)
        assert response.status_code == 401, (method, path)
        response = api.request(method, path, json=body, headers={"Authorization": "Bearer wrong"})
        assert response.status_code == 401
    assert api.get("/models").status_code == 200  # reads stay open
    assert api.get(f"/models/{model}/history").status_code == 200


def test_predict_proxy_keeps_shapes_and_errors(
    api: TestClient, model: str, server: ModelServer
) -> None:
    api.post(f"/models/{model}/deploy", json={"version": "1"}, headers=AUTH)
    server.wait_serving(model, "1")
    body = api.post(f"/models/{model}/predict", json={"features": [ROW, ROW]}).json()
    assert body["predictions"] == ["one", "one"]
    assert body["probabilities"] == [[1.0], [1.0]]
    bad = api.post(f"/models/{model}/predict", json={"data": [[1.0, 2.0]]})
    assert bad.status_code == 422
    assert "wrong feature count" in bad.json()["detail"]
    too_big = api.post(f"/models/{model}/predict", json={"data": [ROW] * 200})
    assert too_big.status_code == 413
    assert api.post("/models/ghost/predict", json={"data": [ROW]}).status_code == 404


@pytest.fixture
def offline_api(server_env: dict[str, str], database_url: str) -> Iterator[TestClient]:
    """The backend with no model server answering: what the registry alone can tell."""
    settings = Settings(
        database_url=database_url,
        redis_url=server_env["REDIS_URL"],
        mlflow_tracking_uri=server_env["MLFLOW_TRACKING_URI"],
        serving_alias=server_env["SERVING_ALIAS"],
        model_server_url=f"http://127.0.0.1:{free_port()}",
    )
    with TestClient(create_app(settings)) as client:
        yield client


def log_gate(registry: MlflowClient, name: str, version: str, gate: dict[str, Any]) -> None:
    """Log the gate on the version's run as the worker does (worker/tracking.py)."""
    run_id = registry.get_model_version(name, version).run_id
    params = [Param(f"mlops.gate_{key}", str(value)) for key, value in gate.items()]
    registry.log_batch(run_id, params=params)


def test_each_version_shows_its_gate_and_the_model_the_served_ones(
    offline_api: TestClient, registry: MlflowClient, serving_alias: str
) -> None:
    x, _ = iris_like()
    name = unique("gated")
    classify = {"metric": "f1", "threshold": 0.85, "direction": "max"}
    regress = {"metric": "rmse", "threshold": 60.0, "direction": "min"}
    for label, gate, metrics in (
        ("a", classify, {"f1": 0.9, "accuracy": 0.91}),
        ("b", regress, {"rmse": 42.5}),
    ):
        version = register_version(constant_classifier(label), x, name, metrics=metrics)
        log_gate(registry, name, version, gate)
    set_served_version(registry, name, "1", serving_alias)

    detail = offline_api.get(f"/models/{name}").json()
    assert {v["version"]: v["gate"] for v in detail["versions"]} == {"1": classify, "2": regress}
    assert detail["gate"] == classify  # the served version's gate draws the chart's line
    listed = {m["name"]: m for m in offline_api.get("/models").json()}[name]
    assert listed["gate"] == classify
    assert [v["gate"] for v in listed["versions"]] == [regress, classify]

    clear_served_version(registry, name, serving_alias)
    assert offline_api.get(f"/models/{name}").json()["gate"] == regress  # else the newest


def test_a_version_below_its_gate_deploys_only_with_force_and_a_reason(
    offline_api: TestClient, registry: MlflowClient, serving_alias: str
) -> None:
    """The verdict the deploy phase kept on a version: shown with it, and a manual deploy of a
    version below its gate answers 409 naming the rule until it says force and why."""
    x, _ = iris_like()
    name = unique("overruled")
    served, worse = (
        register_version(constant_classifier(label), x, name, metrics={"accuracy": accuracy})
        for label, accuracy in (("a", 0.933), ("b", 0.9))
    )
    set_served_version(registry, name, served, serving_alias)
    verdict = evaluate_gate(
        GateSettings("accuracy", 0.8, "max"),
        {"accuracy": 0.9},
        served=ServedVersion(served, {"accuracy": 0.933}),
        tolerance=0.01,
    )
    registry.set_model_version_tag(name, worse, TAG_GATE_VERDICT, verdict.to_json())

    shown = {
        v["version"]: v["verdict"] for v in offline_api.get(f"/models/{name}").json()["versions"]
    }
    assert shown[served] is None  # registered outside a pipeline: never judged
    assert shown[worse]["passed"] is False and shown[worse]["failed_rule"] == "served"
    assert shown[worse]["reason"].startswith(f"accuracy 0.900 < served v{served} 0.933 - 0.01")

    path = f"/models/{name}/deploy"
    refused = offline_api.post(path, json={"version": worse})
    assert refused.status_code == 409, refused.text
    assert refused.json()["detail"].startswith(
        f"version {worse} of {name} failed the comparison with the served version "
        f"(GATE_TOLERANCE): accuracy 0.900 < served v{served} 0.933 - 0.01"
    )
    no_reason = offline_api.post(path, json={"version": worse, "force": True, "reason": " "})
    assert no_reason.status_code == 409 and "force needs a reason" in no_reason.json()["detail"]
    too_long = offline_api.post(path, json={"version": worse, "force": True, "reason": "x" * 501})
    assert too_long.status_code == 422
    assert served_version(registry, name, serving_alias) == served

    forced = offline_api.post(
        path, json={"version": worse, "force": True, "reason": "v1 fails on new customers"}
    )
    assert forced.status_code == 200, forced.text
    assert served_version(registry, name, serving_alias) == worse
    [row] = offline_api.get(f"/models/{name}/history").json()
    assert (row["action"], row["version"], row["previous_version"]) == ("deploy", worse, served)
    assert row["reason"].startswith(f"below its gate (accuracy 0.900 < served v{served} 0.933")
    assert row["reason"].endswith("deployed anyway: v1 fails on new customers")
    # Deploying back to a version that was never judged needs no confirmation.
    back = offline_api.post(path, json={"version": served})
    assert (
        back.status_code == 200
        and offline_api.get(f"/models/{name}/history").json()[0]["reason"] is None
    )


def test_feature_names_come_from_the_signature_with_no_model_server(
    offline_api: TestClient, registry: MlflowClient, serving_alias: str
) -> None:
    x, y = iris_like()
    columns = ["sepal length", "sepal width", "petal length", "petal width"]
    frame = pd.DataFrame(x, columns=columns)
    name = unique("named")
    register_version(DummyClassifier().fit(frame, y), frame, name)
    register_version(constant_classifier("x"), x, name)  # newer, unnamed (NumPy example)
    set_served_version(registry, name, "1", serving_alias)

    detail = offline_api.get(f"/models/{name}").json()
    assert detail["features_version"] == "1"
    assert detail["feature_names"] == columns
    assert detail["n_features"] == 4

    clear_served_version(registry, name, serving_alias)
    newest = offline_api.get(f"/models/{name}").json()
    assert (newest["features_version"], newest["feature_names"], newest["n_features"]) == (
        "2",
        None,
        4,
    )


def test_predict_proxy_reports_a_down_model_server(
    server_env: dict[str, str], database_url: str, model: str
) -> None:
    settings = Settings(
        database_url=database_url,
        redis_url=server_env["REDIS_URL"],
        mlflow_tracking_uri=server_env["MLFLOW_TRACKING_URI"],
        model_server_url=f"http://127.0.0.1:{free_port()}",
    )
    with TestClient(create_app(settings)) as client:
        response = client.post(f"/models/{model}/predict", json={"data": [ROW]})
    assert response.status_code == 503
    assert "unreachable" in response.json()["detail"]


def test_purge_removes_from_registry_but_keeps_history(
    api: TestClient, registry: MlflowClient, serving_alias: str
) -> None:
    x, _ = iris_like()
    name = unique("purged")
    register_version(constant_classifier("x"), x, name)
    assert (
        api.post(f"/models/{name}/deploy", json={"version": "1"}, headers=AUTH).status_code == 200
    )
    response = api.delete(f"/models/{name}?purge=true", headers=AUTH)
    assert response.status_code == 200
    assert response.json()["purged"] is True
    assert not model_exists(registry, name)
    assert api.get(f"/models/{name}").status_code == 404
    assert [h["action"] for h in api.get(f"/models/{name}/history").json()] == ["delete", "deploy"]


def test_the_dashboard_labels_every_deployment_action_and_no_other() -> None:
    # The history's `action` values come from DeploymentAction; the model page labels them.
    script = (REPO_ROOT / "backend/pages/static/js/model.js").read_text()
    labels = re.search(r"const ACTION_WORDS = \{([^}]*)\}", script)
    assert labels is not None
    keys = set(re.findall(r"(\w+):", labels.group(1)))
    assert keys == {action.value for action in DeploymentAction}
