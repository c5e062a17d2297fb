"""PREDICT_TOKEN on the data plane: the model server's predictions, model list and V2 calls, and
the backend forwarding predictions to a guarded model server with the token it holds."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from mlflow import MlflowClient
from sklearn.dummy import DummyClassifier

from backend.app import create_app
from mlops_core.model_registry import set_served_version
from mlops_core.settings import Settings
from tests.serving.conftest import ModelServer, iris_like, register_version, unique

ADMIN = "serving-admin-token"
READ = "serving-read-token"
PREDICT = "serving-predict-token"
ROW = [5.1, 3.5, 1.4, 0.2]
INFER = {"inputs": [{"name": "input-0", "shape": [1, 4], "datatype": "FP64", "data": [ROW]}]}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture(scope="module")
def model(registry: MlflowClient, serving_alias: str) -> str:
    x, _ = iris_like()
    name = unique("guarded")
    version = register_version(
        DummyClassifier(strategy="most_frequent").fit(x, [7] * len(x)), x, name
    )
    set_served_version(registry, name, version, serving_alias)
    return name


@pytest.fixture(scope="module")
def server(model: str, start_server: Callable[..., ModelServer]) -> ModelServer:
    """A model server with PREDICT_TOKEN, the admin API_TOKEN, and a read token it must refuse."""
    server = start_server(
        "guarded",
        PREDICT_TOKEN=PREDICT,
        API_TOKEN=ADMIN,
        API_READ_TOKEN=READ,
        MODEL_RECONCILE_INTERVAL_SECONDS="600",
    )
    server.wait_serving(model, "1")
    return server


def call(
    server: ModelServer, method: str, path: str, token: str | None, **kw: Any
) -> httpx.Response:
    headers = bearer(token) if token else {}
    return httpx.request(method, f"{server.url}{path}", headers=headers, timeout=10, **kw)


def assert_refused(response: httpx.Response, problem: str, field: str = "detail") -> None:
    assert response.status_code == 401, response.text
    assert response.json()[field].startswith(problem)
    assert "PREDICT_TOKEN" in response.json()[field]
    assert response.headers["WWW-Authenticate"] == "Bearer"
    assert PREDICT not in response.text and ADMIN not in response.text


def test_predictions_and_the_model_list_need_the_predict_token(
    server: ModelServer, model: str
) -> None:
    for method, path, body in (
        ("POST", f"/predict/{model}", {"data": [ROW]}),
        ("GET", "/models", None),
    ):
        assert_refused(call(server, method, path, None, json=body), "missing predict token")
        for token in ("wrong", READ):
            refused = call(server, method, path, token, json=body)
            assert_refused(refused, "invalid predict token")
        for token in (PREDICT, ADMIN):
            assert call(server, method, path, token, json=body).status_code == 200, token
    answer = call(server, "POST", f"/predict/{model}", PREDICT, json={"data": [ROW]}).json()
    assert answer["predictions"] == [7]
    # Probes stay open for orchestrators and load balancers.
    for path in ("/health", "/ready", "/v2", "/v2/health/live", "/v2/health/ready"):
        assert call(server, "GET", path, None).status_code == 200, path


def test_v2_infer_metadata_and_model_ready_need_the_predict_token(
    server: ModelServer, model: str
) -> None:
    per_model = [
        ("POST", f"/v2/models/{model}/infer", INFER),
        ("POST", f"/v2/models/{model}/versions/1/infer", INFER),
        ("GET", f"/v2/models/{model}", None),
        ("GET", f"/v2/models/{model}/ready", None),
    ]
    for method, path, body in per_model:
        # Errors keep the protocol's shape: {"error": ...}.
        refused = call(server, method, path, None, json=body)
        assert_refused(refused, "missing predict token", field="error")
        refused = call(server, method, path, READ, json=body)
        assert_refused(refused, "invalid predict token", field="error")
        for token in (PREDICT, ADMIN):
            assert call(server, method, path, token, json=body).status_code == 200, (path, token)
    inferred = call(server, "POST", f"/v2/models/{model}/infer", PREDICT, json=INFER).json()
    assert inferred["outputs"][0]["data"] == [7]
    # Without the token an unknown model looks like a known one: nothing is told apart.
    assert call(server, "GET", "/v2/models/no-such-model", None).status_code == 401
    assert call(server, "GET", "/v2/models/no-such-model", PREDICT).status_code == 404


def backend(server: ModelServer, database_url: str, **tokens: str) -> TestClient:
    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        database_url=database_url,
        redis_url=server.env["REDIS_URL"],
        mlflow_tracking_uri=server.env["MLFLOW_TRACKING_URI"],
        serving_alias=server.env["SERVING_ALIAS"],
        model_server_url=server.url,
        **tokens,
    )
    return TestClient(create_app(settings))


@pytest.fixture
def guarded_backend(server: ModelServer, database_url: str) -> Iterator[TestClient]:
    with backend(
        server, database_url, api_token=ADMIN, api_read_token=READ, predict_token=PREDICT
    ) as client:
        yield client


def test_the_backend_forwards_predictions_with_its_own_predict_token(
    guarded_backend: TestClient, model: str
) -> None:
    path = f"/models/{model}/predict"
    body = {"data": [ROW]}
    for token in (PREDICT, ADMIN):
        answer = guarded_backend.post(path, json=body, headers=bearer(token))
        assert answer.status_code == 200, answer.text
        assert answer.json()["predictions"] == [7]
    assert guarded_backend.post(path, json=body).status_code == 401
    assert guarded_backend.post(path, json=body, headers=bearer(READ)).status_code == 401
    # Model reads are the read token's (or the admin's), with a real registry behind them.
    for read in (f"/models/{model}", "/models", f"/models/{model}/history"):
        assert guarded_backend.get(read, headers=bearer(PREDICT)).status_code == 401
        assert guarded_backend.get(read, headers=bearer(READ)).status_code == 200, read
    assert guarded_backend.get(f"/models/{model}", headers=bearer(ADMIN)).status_code == 200


@pytest.mark.parametrize("predict_token", [None, "not-the-model-servers-token"])
def test_a_backend_without_the_model_servers_token_says_so(
    server: ModelServer, database_url: str, model: str, predict_token: str | None
) -> None:
    tokens = {"predict_token": predict_token} if predict_token else {}
    headers = bearer(predict_token) if predict_token else {}  # the caller passes the backend
    with backend(server, database_url, **tokens) as client:
        answer = client.post(f"/models/{model}/predict", json={"data": [ROW]}, headers=headers)
    assert answer.status_code == 502, answer.text
    assert "same PREDICT_TOKEN" in answer.json()["detail"]
