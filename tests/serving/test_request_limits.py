"""Hostile prediction requests get a 4xx, never a 500 or a 200 carrying NaN: non-finite numbers,
JSON nested thousands deep, model names the registry cannot hold; and a model server still
loading its models says so (503) instead of "not served" (404).

Both the model server's own routes (/predict, the V2 protocol) and the backend's proxy are
checked, since the proxy hands the model server's answer through.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from urllib.parse import quote

import httpx
import pytest
from fastapi.testclient import TestClient
from mlflow import MlflowClient
from sklearn.linear_model import LinearRegression

from backend.app import create_app
from mlops_core.model_registry import set_served_version
from mlops_core.settings import Settings
from model_server.model_store import LOADING
from tests.serving.conftest import ModelServer, iris_like, register_version, unique
from tests.support.processes import free_port, wait_http

ROW = [5.1, 3.5, 1.4, 0.2]
DEEP = "[" * 5000 + "]" * 5000


@pytest.fixture(scope="module")
def model(registry: MlflowClient, serving_alias: str) -> str:
    """A regressor whose output overflows for huge inputs (weight 1000 on the first feature)."""
    x, _ = iris_like()
    name = unique("limits")
    version = register_version(LinearRegression().fit(x, x[:, 0] * 1000), x, name)
    set_served_version(registry, name, version, serving_alias)
    return name


@pytest.fixture(scope="module")
def server(model: str, start_server: Callable[..., ModelServer]) -> ModelServer:
    server = start_server("limits")
    server.wait_serving(model, "1")
    return server


@pytest.fixture
def backend(
    server: ModelServer, server_env: dict[str, str], database_url: str
) -> Iterator[TestClient]:
    settings = Settings(
        database_url=database_url,
        redis_url=server_env["REDIS_URL"],
        mlflow_tracking_uri=server_env["MLFLOW_TRACKING_URI"],
        serving_alias=server_env["SERVING_ALIAS"],
        model_server_url=server.url,
    )
    with TestClient(create_app(settings)) as client:
        yield client


def raw_post(url: str, body: str) -> httpx.Response:
    return httpx.post(url, content=body, headers={"content-type": "application/json"}, timeout=10)


def infer_body(values: str) -> str:
    return f'{{"inputs": [{{"name": "x", "shape": [1, 4], "datatype": "FP64", "data": {values}}}]}}'


@pytest.mark.parametrize(
    ("values", "named"),
    [
        ("[NaN, 3.5, 1.4, 0.2]", "NaN"),
        ("[Infinity, 3.5, 1.4, 0.2]", "Infinity"),
        ("[5.1, -Infinity, 1.4, 0.2]", "-Infinity"),
        ("[1e999, 3.5, 1.4, 0.2]", "1e999"),
    ],
)
def test_non_finite_numbers_are_422_everywhere(
    server: ModelServer, backend: TestClient, model: str, values: str, named: str
) -> None:
    answers = {
        "/predict": raw_post(f"{server.url}/predict/{model}", f'{{"data": [{values}]}}'),
        "V2 infer": raw_post(f"{server.url}/v2/models/{model}/infer", infer_body(values)),
        "backend": backend.post(
            f"/models/{model}/predict",
            content=f'{{"features": {values}}}',
            headers={"content-type": "application/json"},
        ),
    }
    for where, response in answers.items():
        assert response.status_code == 422, (where, response.text)
        message = response.json().get("detail") or response.json()["error"]
        assert "non-finite" in message and named in message, (where, message)


def test_a_non_finite_prediction_is_422_not_a_nan_or_a_500(
    server: ModelServer, backend: TestClient, model: str
) -> None:
    huge = {"data": [[1e308, 0.0, 0.0, 0.0]]}
    response = httpx.post(f"{server.url}/predict/{model}", json=huge, timeout=10)
    assert response.status_code == 422, response.text
    assert "not a finite number" in response.json()["detail"]
    proxied = backend.post(f"/models/{model}/predict", json=huge)
    assert proxied.status_code == 422, proxied.text
    tensor = {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP64", "data": huge["data"]}]}
    v2 = httpx.post(f"{server.url}/v2/models/{model}/infer", json=tensor, timeout=10)
    assert v2.status_code == 422 and "not a finite number" in v2.json()["error"], v2.text
    fine = httpx.post(f"{server.url}/predict/{model}", json={"data": [ROW]}, timeout=10)
    assert fine.status_code == 200, fine.text


def test_json_nested_thousands_deep_is_400(
    server: ModelServer, backend: TestClient, model: str
) -> None:
    for url in (f"{server.url}/predict/{model}", f"{server.url}/v2/models/{model}/infer"):
        response = raw_post(url, DEEP)
        assert response.status_code == 400, (url, response.text)
        message = response.json().get("detail") or response.json()["error"]
        assert "JSON_MAX_DEPTH" in message
    proxied = backend.post(
        f"/models/{model}/predict", content=DEEP, headers={"content-type": "application/json"}
    )
    assert proxied.status_code == 400, proxied.text


@pytest.mark.parametrize("name", ["a:b", "k\x0e", "..x", " "])
def test_impossible_model_names_are_404_on_the_model_server(server: ModelServer, name: str) -> None:
    quoted = quote(name, safe="")
    answers = [
        httpx.post(f"{server.url}/predict/{quoted}", json={"data": [ROW]}, timeout=10),
        httpx.get(f"{server.url}/v2/models/{quoted}", timeout=10),
        httpx.get(f"{server.url}/v2/models/{quoted}/ready", timeout=10),
        httpx.post(f"{server.url}/v2/models/{quoted}/infer", json={"inputs": []}, timeout=10),
    ]
    for response in answers:
        assert response.status_code == 404, (response.request.url, response.text)


def test_impossible_model_names_are_422_on_the_backend_proxy(backend: TestClient) -> None:
    response = backend.post("/models/a%3Ab/predict", json={"data": [ROW]})
    assert response.status_code == 422, response.text
    assert response.json()["detail"][0]["loc"] == ["path", "name"]
    # Names that can exist but need escaping still reach the model server, escaped.
    assert backend.post("/models/a%25b%3Fc/predict", json={"data": [ROW]}).status_code == 404


def test_a_model_server_still_loading_answers_503_loading(
    start_server: Callable[..., ModelServer],
) -> None:
    """No registry answers, so the first sync never ends: every model may still come."""
    server = start_server(
        "never-synced",
        wait=False,
        MLFLOW_TRACKING_URI=f"http://127.0.0.1:{free_port()}",
        MLFLOW_HTTP_REQUEST_MAX_RETRIES="0",
    )
    wait_http(f"{server.url}/health", timeout=90, process=server.process)
    assert httpx.get(f"{server.url}/ready", timeout=10).status_code == 503

    predicted = httpx.post(f"{server.url}/predict/anything", json={"data": [ROW]}, timeout=10)
    assert predicted.status_code == 503, predicted.text
    assert predicted.json() == {"detail": LOADING}
    metadata = httpx.get(f"{server.url}/v2/models/anything", timeout=10)
    assert (metadata.status_code, metadata.json()) == (503, {"error": LOADING})
    ready = httpx.get(f"{server.url}/v2/models/anything/ready", timeout=10)
    assert (ready.status_code, ready.json()) == (503, {"name": "anything", "ready": False})
    impossible = httpx.post(f"{server.url}/predict/a%3Ab", json={"data": [ROW]}, timeout=10)
    assert impossible.status_code == 404, impossible.text
