"""Schema fuzzing: schemathesis drives both live OpenAPI documents and no request may get a 5xx.

A real backend and a real model server (uvicorn processes, as deployed) serve one registered
model; schemathesis generates requests from each server's /openapi.json, valid and invalid alike
(overflowing integers, odd strings in paths, bodies of the wrong shape), and its
`not_a_server_error` check fails on any 5xx. The model's name is offered as a path value half
of the time so that the per-model routes reach their handlers, and the admin token is sent so
that state-changing routes do too.

The run is bounded by time (`--max-time` per document) so that the whole test stays under a
minute; seeds differ between runs, and a failure prints the seed and a curl line reproducing it.
The backend gets a Redis of its own: the pipelines the fuzzer triggers must reach no worker of
another test.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from mlflow import MlflowClient
from sklearn.linear_model import LogisticRegression

from mlops_core.launch_commands import BACKEND_APP, uvicorn_command
from mlops_core.model_registry import set_served_version
from tests.conftest import TEST_ENCRYPTION_KEY
from tests.serving.conftest import REPO_ROOT, ModelServer, iris_like, register_version, unique
from tests.support.processes import VENV_BIN, ManagedProcess, free_port, wait_http
from tests.support.services import RedisServer

TOKEN = "schema-fuzz-admin-token"
PREDICT = "schema-fuzz-predict-token"
# Seconds of fuzzing per document; the servers and schemathesis itself start in about ten more.
BACKEND_SECONDS = 15
MODEL_SERVER_SECONDS = 10


@dataclass
class Stack:
    model: str
    model_server: ModelServer
    backend_url: str
    backend: ManagedProcess


@pytest.fixture(scope="module")
def stack(
    registry: MlflowClient,
    serving_alias: str,
    server_env: dict[str, str],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Stack]:
    home = tmp_path_factory.mktemp("fuzz")
    redis = RedisServer(home)
    redis.start()
    env = {**server_env, "REDIS_URL": redis.url, "API_TOKEN": TOKEN, "PREDICT_TOKEN": PREDICT}
    model_server = ModelServer(env=env, log_dir=home, replica="fuzz")
    port = free_port()
    # Started first: it imports while the model is registered and loaded.
    backend = ManagedProcess(
        uvicorn_command(BACKEND_APP, port, log_level="warning"),
        env={
            **env,
            "MLOPS_HOME": str(home),
            "ENCRYPTION_KEY": TEST_ENCRYPTION_KEY,
            "MODEL_SERVER_URL": model_server.url,
        },
        log_path=home / "backend.log",
        cwd=REPO_ROOT,
    )
    backend_url = f"http://127.0.0.1:{port}"
    try:
        x, y = iris_like()
        model = unique("fuzz")
        version = register_version(LogisticRegression(max_iter=300).fit(x, y), x, model)
        set_served_version(registry, model, version, serving_alias)
        model_server.start()  # ready: the first sync, which loads the model, is done
        wait_http(f"{backend_url}/health", 60, backend)
        yield Stack(model, model_server, backend_url, backend)
    finally:
        backend.stop()
        model_server.stop()
        redis.stop()


def fuzz(schema_url: str, config: Path, seconds: int, workdir: Path) -> str:
    """Run schemathesis against `schema_url`; returns its report, failing the test on a 5xx."""
    command = [
        str(VENV_BIN / "st"),
        *("--config-file", str(config)),
        "run",
        schema_url,
        *("--checks", "not_a_server_error"),
        # Readiness answers 503 by design when a part is slow or down (a loaded machine's MLflow
        # may miss its 2 s probe); it takes no input to fuzz.
        *("--exclude-path", "/ready"),
        *("--header", f"Authorization: Bearer {TOKEN}"),
        *("--max-time", str(seconds)),
        *("--request-timeout", "30"),
        *("--generation-database", "none"),
        "--no-color",
    ]
    result = subprocess.run(
        command, cwd=workdir, capture_output=True, text=True, timeout=seconds + 90, check=False
    )
    report = result.stdout + result.stderr
    assert result.returncode == 0, f"schemathesis found server errors at {schema_url}:\n{report}"
    return report


def test_no_generated_request_gets_a_server_error(stack: Stack, tmp_path: Path) -> None:
    config = tmp_path / "schemathesis.toml"
    config.write_text(
        f'[dictionaries.served]\nvalues = ["{stack.model}"]\n'
        '[dictionaries.versions]\nvalues = ["1"]\n'
        "[parameters]\n"
        '"path.name" = { dictionary = "served", probability = 0.5 }\n'
        '"path.version" = { dictionary = "versions", probability = 0.5 }\n'
    )
    # The model server first: the backend's fuzzing may stop serving or purge the model.
    documents = [
        (f"{stack.model_server.url}/openapi.json", MODEL_SERVER_SECONDS),
        (f"{stack.backend_url}/openapi.json", BACKEND_SECONDS),
    ]
    for schema_url, seconds in documents:
        report = fuzz(schema_url, config, seconds, tmp_path)
        assert "passed" in report and " 0 generated" not in report, report
    assert stack.backend.alive(), stack.backend.log_text()[-4000:]
