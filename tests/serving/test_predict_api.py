"""The model server's prediction API: every accepted shape, every bad input, the V2 protocol."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient
from sklearn.datasets import load_diabetes, load_iris
from sklearn.linear_model import LinearRegression, LogisticRegression

from mlops_core.model_registry import set_served_version
from tests.serving.conftest import ModelServer, register_version, unique

FEATURES = ["sepal length (cm)", "sepal width (cm)", "petal length (cm)", "petal width (cm)"]
ROW = [5.1, 3.5, 1.4, 0.2]


def np_bytes(rows: list[list[float]]) -> bytes:
    """Rows as the binary tensor extension's FP64 bytes (little-endian, row-major)."""
    return np.asarray(rows, dtype="<f8").tobytes()


@pytest.fixture(scope="module")
def models(registry: MlflowClient, serving_alias: str) -> dict[str, Any]:
    """A classifier trained on a DataFrame with string labels, and a plain-array regressor."""
    iris = load_iris(as_frame=True)
    x = iris.data
    y = iris.target.map(dict(enumerate(iris.target_names)))
    classifier = LogisticRegression(max_iter=500).fit(x, y)
    clf_name = unique("iris-api")
    clf_version = register_version(classifier, x, clf_name, metrics={"accuracy": 0.97})
    set_served_version(registry, clf_name, clf_version, serving_alias)

    dx, dy = load_diabetes(return_X_y=True)
    regressor = LinearRegression().fit(dx, dy)
    reg_name = unique("diabetes-api")
    reg_version = register_version(regressor, dx, reg_name, metrics={"rmse": 53.0})
    set_served_version(registry, reg_name, reg_version, serving_alias)
    return {
        "clf": clf_name,
        "clf_version": clf_version,
        "classifier": classifier,
        "x": x,
        "reg": reg_name,
        "regressor": regressor,
        "dx": dx,
    }


@pytest.fixture(scope="module")
def server(models: dict[str, Any], start_server: Callable[..., ModelServer]) -> ModelServer:
    server = start_server("api")
    # Ready means every served model is loaded: both, loaded one after the other (loading two
    # at once from two threads once ended in an import deadlock and a failed load).
    assert server.served() == {models["clf"]: models["clf_version"], models["reg"]: "1"}
    return server


def test_loading_models_logs_one_line_each_and_no_progress_bars(
    server: ModelServer, models: dict[str, Any]
) -> None:
    """MLflow's artifact downloads draw tqdm bars unless told not to (service_logging.py)."""
    assert server.process is not None
    log = server.process.log_text()
    assert f"loaded {models['clf']} version {models['clf_version']}" in log
    assert "Downloading artifacts" not in log and "it/s]" not in log


def post(server: ModelServer, path: str, body: Any, **kwargs: Any) -> httpx.Response:
    return httpx.post(f"{server.url}{path}", json=body, timeout=10, **kwargs)


@pytest.mark.parametrize(
    "body",
    [
        {"data": [ROW, [6.7, 3.0, 5.2, 2.3]]},
        {"features": [ROW, [6.7, 3.0, 5.2, 2.3]]},
        {
            "records": [
                dict(zip(FEATURES, ROW, strict=True)),
                dict(zip(FEATURES, [6.7, 3.0, 5.2, 2.3], strict=True)),
            ]
        },
        {
            "data": [
                dict(zip(FEATURES, ROW, strict=True)),
                dict(zip(FEATURES, [6.7, 3.0, 5.2, 2.3], strict=True)),
            ]
        },
    ],
    ids=["data-rows", "features-rows", "records", "data-records"],
)
def test_predict_shapes_answer_with_trained_labels(
    server: ModelServer, models: dict[str, Any], body: dict[str, Any]
) -> None:
    response = post(server, f"/predict/{models['clf']}", body)
    assert response.status_code == 200, response.text
    result = response.json()
    expected = models["classifier"].predict(
        pd.DataFrame([ROW, [6.7, 3.0, 5.2, 2.3]], columns=FEATURES)
    )
    assert result["predictions"] == expected.tolist() == ["setosa", "virginica"]
    assert result["model_name"] == models["clf"]
    assert result["model_version"] == models["clf_version"]
    assert len(result["probabilities"]) == 2
    assert result["classes"] == ["setosa", "versicolor", "virginica"]
    assert abs(sum(result["probabilities"][0]) - 1) < 1e-9
    assert result["processing_time_ms"] >= 0


def test_features_single_row(server: ModelServer, models: dict[str, Any]) -> None:
    result = post(server, f"/predict/{models['clf']}", {"features": ROW}).json()
    assert result["predictions"] == ["setosa"]


def test_one_row_keyed_by_feature_name_as_the_whole_body(
    server: ModelServer, models: dict[str, Any]
) -> None:
    """Seed 004's flat body, for a model that knows its feature names."""
    flat = dict(zip(FEATURES, [6.7, 3.0, 5.2, 2.3], strict=True))
    result = post(server, f"/predict/{models['clf']}", flat).json()
    assert result["predictions"] == ["virginica"] and len(result["probabilities"]) == 1
    unknown = post(server, f"/predict/{models['clf']}", {**flat, "colour": 1})
    assert unknown.status_code == 422
    assert "unknown features: colour" in unknown.json()["detail"]
    # A model without names cannot read one: it says which shapes it takes.
    nameless = post(server, f"/predict/{models['reg']}", {"age": 0.1})
    assert nameless.status_code == 422
    assert "needs one of 'data', 'features' or 'records'" in nameless.json()["detail"]


def test_probabilities_switched_off_per_request(
    server: ModelServer, models: dict[str, Any]
) -> None:
    rows = [ROW, [6.7, 3.0, 5.2, 2.3]]
    both = post(server, f"/predict/{models['clf']}", {"data": rows}).json()
    labels = post(
        server, f"/predict/{models['clf']}", {"data": rows, "probabilities": False}
    ).json()
    assert labels["predictions"] == both["predictions"] == ["setosa", "virginica"]
    assert "probabilities" not in labels and "classes" not in labels
    flat = post(
        server,
        f"/predict/{models['clf']}",
        {**dict(zip(FEATURES, ROW, strict=True)), "probabilities": False},
    ).json()
    assert flat["predictions"] == ["setosa"] and "probabilities" not in flat
    wrong = post(server, f"/predict/{models['clf']}", {"data": rows, "probabilities": "no"})
    assert wrong.status_code == 422 and "'probabilities' must be true or false" in wrong.text


def test_the_same_bad_input_gets_the_same_status_on_every_protocol(
    server: ModelServer, models: dict[str, Any]
) -> None:
    """One data plane, one mapping: a row of the wrong width is 422 on /predict, V2 and
    /invocations, each in its protocol's error shape; a body that is not JSON is 400."""
    name = models["clf"]
    short = [[1.0, 2.0, 3.0]]
    tensor = {"inputs": [{"name": "x", "shape": [1, 3], "datatype": "FP64", "data": short[0]}]}
    answers = {
        "predict": (post(server, f"/predict/{name}", {"data": short}), "detail"),
        "v2": (post(server, f"/v2/models/{name}/infer", tensor), "error"),
        "mlflow": (post(server, f"/models/{name}/invocations", {"inputs": short}), "message"),
    }
    for protocol, (response, field) in answers.items():
        assert response.status_code == 422, (protocol, response.text)
        assert "wrong feature count: row 0 has 3 values" in response.json()[field], protocol
    for path in (f"/predict/{name}", f"/v2/models/{name}/infer", f"/models/{name}/invocations"):
        garbled = httpx.post(
            f"{server.url}{path}",
            content=b"{not json",
            headers={"content-type": "application/json"},
        )
        assert garbled.status_code == 400, (path, garbled.text)


def test_regressor_without_feature_names(server: ModelServer, models: dict[str, Any]) -> None:
    rows = models["dx"][:3].tolist()
    response = post(server, f"/predict/{models['reg']}", {"data": rows})
    assert response.status_code == 200, response.text
    result = response.json()
    assert result["predictions"] == pytest.approx(
        models["regressor"].predict(models["dx"][:3]).tolist()
    )
    assert "probabilities" not in result
    # Records need names the model does not have.
    response = post(server, f"/predict/{models['reg']}", {"records": [{"a": 1}]})
    assert response.status_code == 422
    assert "feature names" in response.json()["detail"]


@pytest.mark.parametrize(
    ("body", "status", "fragment"),
    [
        (
            {"data": [[1.0, 2.0, 3.0]]},
            422,
            "wrong feature count: row 0 has 3 values, the model expects 4",
        ),
        ({"data": [ROW, [1.0, 2.0]]}, 422, "row 1 has 2 values"),
        (
            {"data": [[1.0, "abc", 3.0, 4.0]]},
            422,
            "non-numeric value at row 0, feature 'sepal width (cm)'",
        ),
        ({"data": [[1.0, None, 3.0, 4.0]]}, 422, "non-numeric value"),
        ({"data": [[1.0, True, 3.0, 4.0]]}, 422, "non-numeric value"),
        ({"data": []}, 422, "empty batch"),
        ({"features": []}, 422, "empty batch"),
        ({"records": []}, 422, "empty batch"),
        ({"rows": [ROW]}, 422, "needs one of 'data', 'features' or 'records'"),
        ({"data": ROW, "features": ROW}, 422, "send one"),
        ({"data": "x"}, 422, "'data' must be a list"),
        ({"data": [1.0, 2.0]}, 422, "'data' row 0 must be a list"),
        ([ROW], 422, "must be a JSON object"),
        (
            {"records": [{"sepal length (cm)": 1.0}]},
            422,
            "row 0 is missing features: sepal width (cm)",
        ),
        (
            {"records": [{**dict(zip(FEATURES, ROW, strict=True)), "colour": 1}]},
            422,
            "row 0 has unknown features: colour",
        ),
    ],
)
def test_bad_inputs_are_named(
    server: ModelServer, models: dict[str, Any], body: Any, status: int, fragment: str
) -> None:
    response = post(server, f"/predict/{models['clf']}", body)
    assert response.status_code == status, response.text
    assert fragment in response.json()["detail"]


def test_unknown_model_invalid_json_and_size_limit(
    server: ModelServer, models: dict[str, Any], start_server: Callable[..., ModelServer]
) -> None:
    response = post(server, "/predict/no-such-model", {"data": [ROW]})
    assert response.status_code == 404
    assert "no-such-model" in response.json()["detail"]

    response = httpx.post(
        f"{server.url}/predict/{models['clf']}",
        content=b"{not json",
        headers={"content-type": "application/json"},
    )
    assert response.status_code == 400
    assert "not valid JSON" in response.json()["detail"]

    small = start_server("small-body", PREDICT_MAX_BODY_BYTES="200")
    assert small.served() == {models["clf"]: models["clf_version"], models["reg"]: "1"}
    big = {"data": [ROW] * 50}
    response = post(small, f"/predict/{models['clf']}", big)
    assert response.status_code == 413
    assert (
        "limit of 200 bytes" in response.json()["detail"]
        or "limit is 200" in response.json()["detail"]
    )

    def chunks():  # no Content-Length: the limit must hold while streaming
        yield b'{"data": ['
        for _ in range(50):
            yield b"[5.1, 3.5, 1.4, 0.2],"
        yield b"[5.1, 3.5, 1.4, 0.2]]}"

    response = httpx.post(f"{small.url}/predict/{models['clf']}", content=chunks())
    assert response.status_code == 413
    assert post(small, f"/predict/{models['clf']}", {"data": [ROW]}).status_code == 200


def test_models_lists_versions_and_request_counts(
    server: ModelServer, models: dict[str, Any]
) -> None:
    before = server.models()[models["clf"]]["requests"]
    for _ in range(3):
        post(server, f"/predict/{models['clf']}", {"data": [ROW]})
    row = server.models()[models["clf"]]
    assert row["requests"] == before + 3
    assert row["version"] == models["clf_version"]
    assert row["loaded_at"]
    assert row["feature_names"] == FEATURES
    assert httpx.get(f"{server.url}/health").json()["status"] == "ok"
    assert httpx.get(f"{server.url}/ready").status_code == 200


# --- Open Inference Protocol (V2), with the JSON exactly as the protocol documents it ---------


def test_v2_health_and_metadata(server: ModelServer, models: dict[str, Any]) -> None:
    assert httpx.get(f"{server.url}/v2").json()["extensions"] == ["binary_tensor_data"]
    assert httpx.get(f"{server.url}/v2/health/live").json() == {"live": True}
    assert httpx.get(f"{server.url}/v2/health/ready").json() == {"ready": True}
    meta = httpx.get(f"{server.url}/v2/models/{models['clf']}").json()
    assert meta == {
        "name": models["clf"],
        "versions": [models["clf_version"]],
        "platform": "sklearn_sklearn",
        "inputs": [{"name": "input-0", "datatype": "FP64", "shape": [-1, 4]}],
        "outputs": [
            {"name": "predict", "datatype": "BYTES", "shape": [-1]},
            {"name": "predict_proba", "datatype": "FP64", "shape": [-1, 3]},
        ],
    }
    ready = httpx.get(f"{server.url}/v2/models/{models['clf']}/ready")
    assert ready.json() == {"name": models["clf"], "ready": True}
    missing = httpx.get(f"{server.url}/v2/models/nope")
    assert missing.status_code == 404
    assert "nope" in missing.json()["error"]


def test_v2_infer_one_tensor(server: ModelServer, models: dict[str, Any]) -> None:
    request = {
        "id": "42",
        "inputs": [
            {
                "name": "input-0",
                "shape": [2, 4],
                "datatype": "FP64",
                "data": [5.1, 3.5, 1.4, 0.2, 6.7, 3.0, 5.2, 2.3],
            }
        ],
        "outputs": [{"name": "predict"}],
    }
    response = post(server, f"/v2/models/{models['clf']}/infer", request)
    assert response.status_code == 200, response.text
    assert response.json() == {
        "model_name": models["clf"],
        "model_version": models["clf_version"],
        "id": "42",
        "parameters": {},
        "outputs": [
            {"name": "predict", "shape": [2], "datatype": "BYTES", "data": ["setosa", "virginica"]}
        ],
    }
    # Nested data, versioned path, all outputs by default.
    request = {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [ROW]}]}
    path = f"/v2/models/{models['clf']}/versions/{models['clf_version']}/infer"
    body = post(server, path, request).json()
    assert body["id"]  # generated when the request has none
    names = [o["name"] for o in body["outputs"]]
    assert names == ["predict", "predict_proba"]
    proba = body["outputs"][1]
    assert proba["shape"] == [1, 3] and proba["datatype"] == "FP64" and len(proba["data"]) == 3


def test_v2_infer_one_tensor_per_feature(server: ModelServer, models: dict[str, Any]) -> None:
    """MLServer's column convention: one input per feature name, any order."""
    inputs = [
        {"name": name, "shape": [2, 1], "datatype": "FP64", "data": [a, b]}
        for name, a, b in reversed(list(zip(FEATURES, ROW, [6.7, 3.0, 5.2, 2.3], strict=True)))
    ]
    body = post(server, f"/v2/models/{models['clf']}/infer", {"inputs": inputs}).json()
    assert body["outputs"][0]["data"] == ["setosa", "virginica"]


def test_v2_regressor_outputs(server: ModelServer, models: dict[str, Any]) -> None:
    rows = models["dx"][:2]
    request = {
        "inputs": [
            {"name": "input-0", "shape": [2, 10], "datatype": "FP64", "data": rows.ravel().tolist()}
        ]
    }
    body = post(server, f"/v2/models/{models['reg']}/infer", request).json()
    assert body["outputs"] == [
        {
            "name": "predict",
            "shape": [2],
            "datatype": "FP64",
            "data": pytest.approx(models["regressor"].predict(rows).tolist()),
        }
    ]


@pytest.mark.parametrize(
    ("request_body", "status", "fragment"),
    [
        ({"inputs": []}, 422, "'inputs' must be a non-empty list"),
        ({"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP64"}]}, 422, "missing 'data'"),
        (
            {"inputs": [{"name": "x", "shape": [2, 4], "datatype": "FP64", "data": ROW}]},
            422,
            "needs 8 values, data has 4",
        ),
        (
            {"inputs": [{"name": "x", "shape": [1, 3], "datatype": "FP64", "data": ROW[:3]}]},
            422,
            "wrong feature count",
        ),
        (
            {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP99", "data": ROW}]},
            422,
            "unknown datatype 'FP99'",
        ),
        (
            {
                "inputs": [
                    {"name": "x", "shape": [1, 4], "datatype": "FP64", "data": [1, "a", 2, 3]}
                ]
            },
            422,
            "is not FP64",
        ),
        (
            {"inputs": [{"name": "x", "shape": [0, 4], "datatype": "FP64", "data": []}]},
            422,
            "empty batch",
        ),
        (
            {
                "inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP64", "data": ROW}],
                "outputs": [{"name": "logits"}],
            },
            422,
            "unknown output 'logits'",
        ),
    ],
)
def test_v2_errors(
    server: ModelServer, models: dict[str, Any], request_body: Any, status: int, fragment: str
) -> None:
    response = post(server, f"/v2/models/{models['clf']}/infer", request_body)
    assert response.status_code == status, response.text
    assert fragment in response.json()["error"]


def test_v2_with_the_tritonclient_library(server: ModelServer, models: dict[str, Any]) -> None:
    """A stock KServe/Triton V2 client works unchanged against the model server (JSON tensors)."""
    import tritonclient.http as v2

    client = v2.InferenceServerClient(url=server.url.removeprefix("http://"))
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready(models["clf"])
    assert client.get_model_metadata(models["clf"])["inputs"][0]["shape"] == [-1, 4]

    rows = np.array([ROW, [6.7, 3.0, 5.2, 2.3]], dtype=np.float64)
    tensor = v2.InferInput("input-0", list(rows.shape), "FP64")
    tensor.set_data_from_numpy(rows, binary_data=False)
    wanted = [
        v2.InferRequestedOutput("predict", binary_data=False),
        v2.InferRequestedOutput("predict_proba", binary_data=False),
    ]
    result = client.infer(models["clf"], [tensor], outputs=wanted, request_id="7")

    labels = [v.decode() if isinstance(v, bytes) else v for v in result.as_numpy("predict")]
    assert labels == ["setosa", "virginica"]
    proba = result.as_numpy("predict_proba")
    assert proba.shape == (2, 3)
    expected = models["classifier"].predict_proba(pd.DataFrame(rows, columns=FEATURES))
    assert proba.ravel().tolist() == pytest.approx(expected.ravel().tolist())
    assert result.get_response()["id"] == "7"
    client.close()


def test_v2_binary_tensors_with_the_tritonclient_library(
    server: ModelServer, models: dict[str, Any]
) -> None:
    """Triton's HTTP client with its defaults: binary inputs, and outputs asked for as binary
    (or all outputs binary when none is named)."""
    import tritonclient.http as v2

    client = v2.InferenceServerClient(url=server.url.removeprefix("http://"))
    rows = np.array([ROW, [6.7, 3.0, 5.2, 2.3], [5.9, 3.0, 4.2, 1.5]], dtype=np.float32)
    expected = models["classifier"].predict_proba(pd.DataFrame(rows, columns=FEATURES))
    tensor = v2.InferInput("input-0", list(rows.shape), "FP32")
    tensor.set_data_from_numpy(rows)  # binary_data=True, the default
    for outputs in (
        [v2.InferRequestedOutput("predict"), v2.InferRequestedOutput("predict_proba")],
        None,  # no outputs named: the client asks for every output as binary data
    ):
        result = client.infer(models["clf"], [tensor], outputs=outputs)
        response = result.get_response()
        assert all("binary_data_size" in o["parameters"] for o in response["outputs"])
        labels = [v.decode() for v in result.as_numpy("predict")]
        assert labels == ["setosa", "virginica", "versicolor"]
        proba = result.as_numpy("predict_proba")
        assert proba.shape == (3, 3)
        assert proba.ravel().tolist() == pytest.approx(expected.ravel().tolist(), abs=1e-6)
    # Mixed: binary input, labels as JSON.
    result = client.infer(
        models["clf"], [tensor], outputs=[v2.InferRequestedOutput("predict", binary_data=False)]
    )
    assert result.get_response()["outputs"][0]["data"] == ["setosa", "virginica", "versicolor"]
    # One binary input per feature (MLServer's column convention), FP64, any order.
    columns = []
    for index in reversed(range(4)):
        column = v2.InferInput(FEATURES[index], [3], "FP64")
        column.set_data_from_numpy(rows[:, index].astype(np.float64))
        columns.append(column)
    result = client.infer(models["clf"], columns, outputs=[v2.InferRequestedOutput("predict")])
    assert [v.decode() for v in result.as_numpy("predict")] == labels
    client.close()


@pytest.mark.parametrize(
    ("header", "size", "tail", "status", "fragment"),
    [
        (None, 32, b"", 422, "binary_data_size 32 does not fit the 0 bytes"),
        ("9999", 32, b"", 400, "Inference-Header-Content-Length is '9999'"),
        ("json", 32, b"\0" * 32, 400, "Inference-Header-Content-Length is 'json'"),
        ("", 16, b"\0" * 16, 422, "32 bytes, binary_data_size says 16"),
        ("", 32, b"\0" * 40, 422, "8 bytes of binary data that no input"),
        ("", 32, np_bytes([[float("nan"), 3.5, 1.4, 0.2]]), 422, "non-finite value at row 0"),
    ],
)
def test_v2_binary_framing_errors_are_named(
    server: ModelServer,
    models: dict[str, Any],
    header: str | None,
    size: int,
    tail: bytes,
    status: int,
    fragment: str,
) -> None:
    request = {
        "inputs": [
            {
                "name": "x",
                "shape": [1, 4],
                "datatype": "FP64",
                "parameters": {"binary_data_size": size},
            }
        ]
    }
    text = json.dumps(request).encode()
    headers = {"Content-Type": "application/octet-stream"}
    if header is not None:
        headers["Inference-Header-Content-Length"] = header or str(len(text))
    response = httpx.post(
        f"{server.url}/v2/models/{models['clf']}/infer", content=text + tail, headers=headers
    )
    assert response.status_code == status, response.text
    assert fragment in response.json()["error"]


def test_mlflow_invocations_when_several_models_are_served(
    server: ModelServer, models: dict[str, Any]
) -> None:
    """/invocations asks the one served model; with two it names them, and each has its own."""
    rows = models["dx"][:3].tolist()
    several = post(server, "/invocations", {"inputs": rows})
    assert several.status_code == 404
    assert several.json()["error_code"] == "RESOURCE_DOES_NOT_EXIST"
    message = several.json()["message"]
    assert models["clf"] in message and models["reg"] in message and "/invocations" in message
    named = post(server, f"/models/{models['reg']}/invocations", {"inputs": rows})
    assert named.status_code == 200, named.text
    assert named.json() == {
        "predictions": pytest.approx(models["regressor"].predict(models["dx"][:3]).tolist())
    }
    missing = post(server, "/models/no-such-model/invocations", {"inputs": rows})
    assert missing.status_code == 404 and "no-such-model" in missing.json()["message"]
