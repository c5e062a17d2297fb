"""`mlops models ...` and `mlops predict` against a real backend, model server, MLflow and Redis.

Two versions of one model answer with different constant labels, so each prediction shows which
version the CLI reached. The CLI runs in this process (`main`), as the installed command does.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path

import pandas as pd
import pytest
from mlflow import MlflowClient
from sklearn.dummy import DummyClassifier

from mlops_cli.main import main as cli_main
from mlops_core.database import upgrade_database
from mlops_core.deploy_gate import evaluate_gate
from mlops_core.launch_commands import BACKEND_APP, uvicorn_command
from mlops_core.model_registry import TAG_GATE_VERDICT, set_served_version
from mlops_core.notebook_contract import GateSettings
from tests.conftest import TEST_ENCRYPTION_KEY
from tests.serving.conftest import ModelServer, iris_like, register_version, unique
from tests.support.processes import ManagedProcess, free_port, wait_http

TOKEN = "cli-models-admin-token"
FEATURES = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def model(registry: MlflowClient, serving_alias: str) -> str:
    x, _ = iris_like()
    frame = pd.DataFrame(x, columns=FEATURES)  # a signature with the features' names
    name = unique("cli-model")
    for label, accuracy in (("one", 0.91), ("two", 0.95)):
        classifier = DummyClassifier(strategy="constant", constant=label)
        register_version(
            classifier.fit(frame, [label] * len(frame)),
            frame,
            name,
            metrics={"accuracy": accuracy},
            tags={"commit": f"c0ffee{label}", "pipeline_id": "77"},
        )
    set_served_version(registry, name, "1", serving_alias)
    return name


@pytest.fixture(scope="module")
def server(model: str, start_server: Callable[..., ModelServer]) -> ModelServer:
    server = start_server("cli-models", MODEL_RECONCILE_INTERVAL_SECONDS="600")
    server.wait_serving(model, "1")
    return server


@pytest.fixture(scope="module")
def backend(
    server: ModelServer, server_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """The backend as deployed (uvicorn), in front of that model server."""
    home = tmp_path_factory.mktemp("cli-models-home")
    database_url = f"sqlite:///{home / 'mlops.db'}"
    upgrade_database(database_url)
    port = free_port()
    process = ManagedProcess(
        uvicorn_command(BACKEND_APP, port, log_level="warning"),
        env={
            **server_env,
            "DATABASE_URL": database_url,
            "MLOPS_HOME": str(home),
            "ENCRYPTION_KEY": TEST_ENCRYPTION_KEY,
            "MODEL_SERVER_URL": server.url,
            "API_TOKEN": TOKEN,
        },
        log_path=home / "backend.log",
        cwd=REPO_ROOT,
    )
    url = f"http://127.0.0.1:{port}"
    wait_http(f"{url}/health", 60, process)
    yield url
    process.stop()


@pytest.fixture
def mlops(
    backend: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> Callable[..., tuple[int, str, str]]:
    """Run `mlops ARGS` against the backend, with the admin token from the environment."""
    monkeypatch.setenv("MLOPS_API_URL", backend)
    monkeypatch.setenv("API_TOKEN", TOKEN)

    def run(*args: str) -> tuple[int, str, str]:
        code = cli_main(list(args))
        out, err = capsys.readouterr()
        return code, out, err

    return run


def test_models_are_listed_shown_deployed_rolled_back_and_deleted(
    mlops: Callable[..., tuple[int, str, str]],
    model: str,
    server: ModelServer,
    registry: MlflowClient,
) -> None:
    code, out, _ = mlops("models", "list")
    assert code == 0 and out.splitlines()[0].split() == [
        "NAME",
        "SERVED",
        "LATEST",
        "VERSIONS",
        "GATE",
    ]
    assert [model, "1", "2", "2", "-"] in [line.split() for line in out.splitlines()]
    code, out, _ = mlops("models", "show", model)
    lines = out.splitlines()
    assert code == 0 and lines[0] == f"model:      {model}"
    assert lines[1].startswith("served:     version 1 (alias ")
    assert lines[2] == "replicas:   cli-models has 1"
    assert f"features:   {', '.join(FEATURES)}" in lines
    versions = {line.split()[0]: line.split() for line in lines if line[:1].isdigit()}
    assert versions["1"][1:4] == ["yes", "accuracy=0.91", "c0ffeeone"]
    assert versions["2"][1:3] == ["accuracy=0.95", "c0ffeetwo"]

    # Version 2 below its gate: serving it needs --force, and --force needs --reason.
    below = evaluate_gate(GateSettings("accuracy", 0.97, "max"), {"accuracy": 0.95})
    registry.set_model_version_tag(model, "2", TAG_GATE_VERDICT, below.to_json())
    code, _, err = mlops("models", "deploy", model, "2")
    assert code == 4 and "409" in err and '"force": true' in err
    code, _, err = mlops("models", "deploy", model, "2", "--force")
    assert code == 64 and "--force needs --reason" in err
    code, out, _ = mlops("models", "deploy", model, "2", "--force", "--reason", "label fix")
    assert code == 0 and out == f"{model}: version 2 is served (was 1)\n"
    server.wait_serving(model, "2")
    code, out, _ = mlops("models", "rollback", model, "--reason", "v2 slow", "--json")
    assert code == 0 and json.loads(out)["served_version"] == "1"
    server.wait_serving(model, "1")
    code, out, _ = mlops("models", "history", model, "--json")
    history = [json.loads(line) for line in out.splitlines()]
    assert [(h["action"], h["version"], h["previous_version"]) for h in history] == [
        ("rollback", "1", "2"),
        ("deploy", "2", "1"),
    ]
    assert history[0]["reason"] == "v2 slow"
    assert history[1]["reason"].endswith("deployed anyway: label fix")
    code, out, _ = mlops("models", "history", model)
    assert code == 0 and out.splitlines()[1].split()[1:5] == ["rollback", "1", "2", "api"]
    assert out.splitlines()[1].endswith("  v2 slow")

    code, _, err = mlops("models", "deploy", model, "99")
    assert code == 3 and "has no version 99" in err
    code, _, err = mlops("models", "rollback", unique("no-such-model"))
    assert code == 3 and "is not registered" in err
    code, _, err = mlops("models", "deploy", model, "2", "--token", "wrong")
    assert code == 4 and "401" in err and "--token" in err

    code, _, err = mlops("models", "delete", model)
    assert code == 64 and "Pass --yes" in err
    code, out, _ = mlops("models", "delete", model, "--yes", "--reason", "retired")
    assert code == 0 and out == f"{model}: not served any more (was 1)\n"
    server.wait_serving(model, None)
    code, out, _ = mlops("models", "history", model, "--limit", "1", "--json")
    assert json.loads(out)["reason"] == "retired"
    code, _, err = mlops("predict", model, "--row", "5.1,3.5,1.4,0.2")
    assert code == 3 and model in err
    assert mlops("models", "rollback", model)[0] == 0  # serves 1 again for the next test
    server.wait_serving(model, "1")


def test_predict_sends_rows_and_files_in_batches(
    mlops: Callable[..., tuple[int, str, str]], model: str, server: ModelServer, tmp_path: Path
) -> None:
    code, out, _ = mlops("predict", model, "--row", "5.1,3.5,1.4,0.2", "--row", "6.7,3,5.2,2.3")
    lines = out.splitlines()
    assert code == 0 and lines[0].split() == [
        "ROW",
        "PREDICTION",
        "VERSION",
        "PROBABILITIES",
        "INPUT",
    ]
    assert [line.split()[:3] for line in lines[1:]] == [["1", "one", "1"], ["2", "one", "1"]]

    # A CSV with a header: rows keyed by feature name, 5 rows in batches of 2 (3 requests).
    rows = tmp_path / "rows.csv"
    rows.write_text(
        ",".join(reversed(FEATURES)) + "\n"
        + "\n".join(f"0.2,1.4,3.5,{5 + i / 10}" for i in range(5)) + "\n"
    )  # fmt: skip
    code, out, err = mlops("predict", model, "--file", str(rows), "--batch-size", "2", "--json")
    answers = [json.loads(line) for line in out.splitlines()]
    assert code == 0, err
    assert [a["row"] for a in answers] == [1, 2, 3, 4, 5]
    assert {a["prediction"] for a in answers} == {"one"}
    assert answers[4]["input"] == dict(zip(reversed(FEATURES), [0.2, 1.4, 3.5, 5.4], strict=True))
    assert len({a["request_id"] for a in answers}) == 3
    assert answers[0]["probabilities"] == {"one": 1.0}

    lines_file = tmp_path / "rows.jsonl"
    lines_file.write_text(
        json.dumps(dict.fromkeys(FEATURES, 2.0)) + "\n\n" + json.dumps(dict.fromkeys(FEATURES, 1.0))
    )
    code, out, _ = mlops("predict", model, "--file", str(lines_file), "--json")
    assert code == 0 and [json.loads(line)["prediction"] for line in out.splitlines()] == [
        "one",
        "one",
    ]

    code, _, err = mlops("predict", model, "--row", "1,2,3,4", "--file", str(rows))
    assert code == 64 and "not both" in err
    ragged = tmp_path / "ragged.csv"
    ragged.write_text("a,b\n1,2\n3\n")
    code, _, err = mlops("predict", model, "--file", str(ragged))
    assert code == 64 and "line 3: 1 values for the 2 columns of the header" in err
    code, _, err = mlops("predict", model, "--row", "1,2")
    assert code == 4 and "422" in err  # the model server's answer names the problem
