"""MLflow's scoring protocol: a client of `mlflow models serve` switches to the model server by
changing its URL. Each request format is sent to both servers, serving the same registered
version, and the answers compared; MLflow's own scoring client is used for one of them."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from mlflow import MlflowClient
from mlflow.pyfunc.scoring_server.client import ScoringServerClient
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression

from mlops_core.model_registry import set_served_version
from tests.serving.conftest import ModelServer, register_version, unique
from tests.support.processes import VENV_BIN, ManagedProcess, free_port, wait_http

ROWS = [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3], [5.9, 3.0, 4.2, 1.5]]


@dataclass
class Servers:
    ours: ModelServer
    mlflow_url: str
    mlflow_port: int
    features: list[str]
    model: Any


@pytest.fixture(scope="module")
def servers(
    registry: MlflowClient,
    serving_alias: str,
    server_env: dict[str, str],
    start_server: Callable[..., ModelServer],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Servers]:
    """One classifier fitted on a DataFrame (so it knows its column names), served by a model
    server (the only model under this module's alias) and by `mlflow models serve`."""
    iris = load_iris(as_frame=True)
    labels = iris.target.map(dict(enumerate(iris.target_names)))
    model = LogisticRegression(max_iter=500).fit(iris.data, labels)
    name = unique("scoring")
    version = register_version(model, iris.data, name)
    set_served_version(registry, name, version, serving_alias)
    port = free_port()
    theirs = ManagedProcess(
        [
            str(VENV_BIN / "mlflow"),
            *("models", "serve", "-m", f"models:/{name}/{version}", "--env-manager", "local"),
            *("--host", "127.0.0.1", "--port", str(port)),
        ],
        env=server_env,
        log_path=tmp_path_factory.mktemp("mlflow-serve") / "serve.log",
    )
    try:
        ours = start_server("scoring")  # starts while MLflow's server imports
        wait_http(f"http://127.0.0.1:{port}/ping", timeout=120, process=theirs)
        yield Servers(ours, f"http://127.0.0.1:{port}", port, list(iris.data.columns), model)
    finally:
        theirs.stop()


def both(servers: Servers, body: Any) -> tuple[httpx.Response, httpx.Response]:
    ours = httpx.post(f"{servers.ours.url}/invocations", json=body, timeout=30)
    theirs = httpx.post(f"{servers.mlflow_url}/invocations", json=body, timeout=30)
    return ours, theirs


def test_every_format_mlflow_answers_gets_the_same_answer(servers: Servers) -> None:
    names = servers.features
    records = [dict(zip(names, row, strict=True)) for row in ROWS]
    bodies = {
        "dataframe_split": {"dataframe_split": {"columns": names, "data": ROWS}},
        "dataframe_split, columns in another order": {
            "dataframe_split": {"columns": names[::-1], "data": [row[::-1] for row in ROWS]}
        },
        "dataframe_split with an index": {
            "dataframe_split": {"index": [0, 1, 2], "columns": names, "data": ROWS}
        },
        "dataframe_records": {"dataframe_records": records},
        "instances as records": {"instances": records},
        "inputs as columns": {"inputs": {n: [row[i] for row in ROWS] for i, n in enumerate(names)}},
        "params beside the data": {"dataframe_records": records, "params": {"unused": 1}},
    }
    expected = {"predictions": ["setosa", "virginica", "versicolor"]}
    for label, body in bodies.items():
        ours, theirs = both(servers, body)
        assert theirs.status_code == 200, (label, theirs.text)
        assert ours.status_code == 200, (label, ours.text)
        assert ours.json() == theirs.json() == expected, label
        assert ours.headers["content-type"] == "application/json"


def test_mlflows_own_scoring_client(servers: Servers) -> None:
    import pandas as pd

    frame = pd.DataFrame(ROWS, columns=servers.features)
    port = servers.ours.url.rsplit(":", 1)[1]
    ours = ScoringServerClient("127.0.0.1", port)
    theirs = ScoringServerClient("127.0.0.1", servers.mlflow_port)
    ours.wait_server_ready(timeout=10)
    answered = ours.invoke(frame)  # dataframe_split, with pandas' index
    assert answered.get_predictions().equals(theirs.invoke(frame).get_predictions())
    assert answered["predictions"] == servers.model.predict(frame).tolist()
    assert ours.get_version() == theirs.get_version()


def test_rows_by_position_where_mlflow_asks_for_columns(servers: Servers) -> None:
    """MLflow refuses rows without column names for a model with a column signature; the
    model server reads them in the model's column order."""
    ours, theirs = both(servers, {"inputs": ROWS})
    assert theirs.status_code == 400
    assert ours.status_code == 200 and ours.json()["predictions"] == [
        "setosa",
        "virginica",
        "versicolor",
    ]


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ({"inputs": ROWS, "instances": ROWS}, "exactly one of"),
        ({"rows": ROWS}, "exactly one of"),
        ({"inputs": [[1.0, 2.0, 3.0]]}, "wrong feature count"),
        ({"dataframe_split": {"columns": ["a", "b"], "data": [[1, 2]]}}, "missing features"),
        ([ROWS], "must be a JSON object"),
    ],
)
def test_requests_both_servers_refuse_are_refused_with_a_reason(
    servers: Servers, body: Any, fragment: str
) -> None:
    ours, theirs = both(servers, body)
    assert theirs.status_code == 400, theirs.text
    assert ours.status_code == 422, ours.text
    assert ours.json()["error_code"] == "BAD_REQUEST"
    assert fragment in ours.json()["message"]


def test_probes_and_content_types(servers: Servers) -> None:
    assert httpx.get(f"{servers.ours.url}/ping").status_code == 200
    csv = httpx.post(
        f"{servers.ours.url}/invocations",
        content=b"a,b\n1,2\n",
        headers={"content-type": "text/csv"},
    )
    assert csv.status_code == 415 and "application/json" in csv.json()["message"]
    named = httpx.post(
        f"{servers.ours.url}/models/{servers.ours.served().popitem()[0]}/invocations",
        json={"dataframe_split": {"columns": servers.features, "data": ROWS[:1]}},
    )
    assert named.json() == {"predictions": ["setosa"]}
