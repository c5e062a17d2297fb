"""Each version's hyperparameters, two versions side by side, and who changed what is served
(named tokens, reasons), through the backend's models API on a real MLflow."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from mlflow import MlflowClient
from mlflow.entities import Param

from backend.app import create_app
from mlops_core.deploy_gate import evaluate_gate
from mlops_core.model_registry import (
    TAG_GATE_VERDICT,
    TAG_NOTEBOOK_PATH,
    TAG_TRIGGER_PARAMETERS,
    set_served_version,
)
from mlops_core.notebook_contract import GateSettings
from mlops_core.settings import Settings
from tests.serving.conftest import iris_like, register_version, unique
from tests.serving.test_models_api import constant_classifier
from tests.support.processes import free_port

ADMIN = "compare-admin-token"
ALICE = "alice-token-0123"
GATE = {
    "mlops.gate_metric": "accuracy",
    "mlops.gate_threshold": "0.8",
    "mlops.gate_direction": "max",
}


@pytest.fixture
def api(server_env: dict[str, str], database_url: str) -> Iterator[TestClient]:
    """The backend with an admin token and a named one; no model server needed."""
    settings = Settings(
        database_url=database_url,
        redis_url=server_env["REDIS_URL"],
        mlflow_tracking_uri=server_env["MLFLOW_TRACKING_URI"],
        serving_alias=server_env["SERVING_ALIAS"],
        model_server_url=f"http://127.0.0.1:{free_port()}",
        api_token=ADMIN,
        api_tokens=f"alice:{ALICE}, ci:ci-token-4567",
    )
    with TestClient(create_app(settings)) as client:
        yield client


def version_of(
    registry: MlflowClient,
    name: str,
    *,
    accuracy: float,
    params: dict[str, str],
    commit: str,
    given: dict[str, object] | None = None,
) -> str:
    """A version registered as a pipeline registers it: params and gate on the run, tags."""
    x, _ = iris_like()
    tags = {"commit": commit, "pipeline_id": "7", TAG_NOTEBOOK_PATH: "notebooks/iris.ipynb"}
    if given:
        tags[TAG_TRIGGER_PARAMETERS] = json.dumps(given)
    version = register_version(
        constant_classifier("x"), x, name, metrics={"accuracy": accuracy}, tags=tags
    )
    run_id = registry.get_model_version(name, version).run_id
    registry.log_batch(run_id, params=[Param(k, v) for k, v in {**params, **GATE}.items()])
    verdict = evaluate_gate(GateSettings("accuracy", 0.8, "max"), {"accuracy": accuracy})
    registry.set_model_version_tag(name, version, TAG_GATE_VERDICT, verdict.to_json())
    return version


@pytest.fixture
def two_versions(registry: MlflowClient, serving_alias: str) -> str:
    name = unique("compared")
    version_of(
        registry, name, accuracy=0.9, params={"C": "0.05", "MAX_ITER": "500"}, commit="a" * 40
    )
    version_of(
        registry,
        name,
        accuracy=0.95,
        params={"C": "0.25", "MAX_ITER": "500", "SOLVER": "lbfgs"},
        commit="b" * 40,
        given={"C": 0.25},
    )
    set_served_version(registry, name, "1", serving_alias)
    return name


def test_each_version_lists_its_hyperparameters_and_which_the_trigger_gave(
    api: TestClient, two_versions: str
) -> None:
    versions = {v["version"]: v for v in api.get(f"/models/{two_versions}").json()["versions"]}
    assert versions["1"]["params"] == {"C": "0.05", "MAX_ITER": "500"}  # no gate params
    assert versions["1"]["given_parameters"] is None
    assert versions["2"]["params"] == {"C": "0.25", "MAX_ITER": "500", "SOLVER": "lbfgs"}
    assert versions["2"]["given_parameters"] == {"C": 0.25}


def test_two_versions_side_by_side_mark_what_differs(api: TestClient, two_versions: str) -> None:
    response = api.get(f"/models/{two_versions}/compare", params={"a": "1", "b": 2})
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["a"]["version"], body["a"]["served"], body["b"]["version"]) == ("1", True, "2")
    params = {row["name"]: row for row in body["params"]}
    assert (params["C"]["a"], params["C"]["b"], params["C"]["changed"]) == ("0.05", "0.25", True)
    assert params["C"]["given"] == ["b"]
    assert params["MAX_ITER"]["changed"] is False
    assert (params["SOLVER"]["a"], params["SOLVER"]["b"]) == (None, "lbfgs")
    [accuracy] = body["metrics"]
    assert accuracy["gate"] is True and accuracy["better"] == "b"
    assert accuracy["delta"] == pytest.approx(0.05)
    run = {row["name"]: row for row in body["run"]}
    assert (run["commit"]["a"], run["commit"]["b"], run["commit"]["changed"]) == (
        "a" * 40,
        "b" * 40,
        True,
    )
    assert run["notebook"]["changed"] is False and run["notebook"]["a"] == "notebooks/iris.ipynb"
    assert run["gate"]["a"] == "accuracy >= 0.8" and run["gate verdict"]["b"] == "passed"
    assert run["run started"]["a"] and run["run started"]["changed"] is False  # shown, not marked
    assert body["changed"] == 4  # C, SOLVER, accuracy, commit

    # Swapped, the same rows point the other way.
    swapped = api.get(f"/models/{two_versions}/compare?a=2&b=1").json()
    assert swapped["metrics"][0]["better"] == "a" and swapped["changed"] == 4


def test_a_comparison_of_an_unknown_or_malformed_version_says_which(
    api: TestClient, two_versions: str
) -> None:
    missing = api.get(f"/models/{two_versions}/compare?a=1&b=9")
    assert missing.status_code == 404
    assert missing.json()["detail"] == f"model {two_versions!r} has no version 9"
    malformed = api.get(f"/models/{two_versions}/compare?a=v1&b=2")
    assert malformed.status_code == 422
    assert (
        malformed.json()["detail"]
        == "a must be a registered version number such as \"3\", not 'v1'"
    )
    assert api.get(f"/models/{two_versions}/compare?a=1").status_code == 422
    assert api.get("/models/no-such-model/compare?a=1&b=2").status_code == 404


def test_the_history_names_the_token_used_and_keeps_the_reason(
    api: TestClient, two_versions: str
) -> None:
    name = two_versions
    alice = {"Authorization": f"Bearer {ALICE}"}
    admin = {"Authorization": f"Bearer {ADMIN}"}
    deployed = api.post(f"/models/{name}/deploy", json={"version": "2"}, headers=alice)
    assert deployed.status_code == 200, deployed.text
    rolled = api.post(
        f"/models/{name}/rollback", json={"reason": " v2 mislabels\n setosa "}, headers=admin
    )
    assert rolled.json()["served_version"] == "1"
    stopped = api.request(
        "DELETE",
        f"/models/{name}",
        json={"reason": "retiring it"},
        headers={"Authorization": "Bearer ci-token-4567"},
    )
    assert stopped.status_code == 200, stopped.text
    back = api.post(f"/models/{name}/rollback", headers=alice)  # no body: no reason
    assert back.status_code == 200, back.text

    history = api.get(f"/models/{name}/history").json()
    assert [(h["action"], h["actor"], h["reason"]) for h in history] == [
        ("rollback", "alice", None),
        ("delete", "ci", "retiring it"),
        ("rollback", "api", "v2 mislabels setosa"),
        ("deploy", "alice", None),
    ]
    refused = api.post(
        f"/models/{name}/deploy", json={"version": "2"}, headers={"Authorization": "Bearer alice"}
    )
    assert refused.status_code == 401  # a name is not a token
    too_long = api.post(f"/models/{name}/rollback", json={"reason": "x" * 501}, headers=alice)
    assert too_long.status_code == 422
