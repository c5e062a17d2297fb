"""Code inside a registered model runs in a sandboxed model process, never in the server.

A cloudpickled model can carry any function of the repository that pushed it, and unpickling
or calling it runs that function. Here a model written as an attacker would reports what it can
reach from inside the model server: the test asserts it reaches nothing of the server's, and
that a model process that dies or hangs costs one request a 503, not the server.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import cloudpickle
import httpx
import numpy as np
import pytest
from sklearn.base import BaseEstimator

from tests.serving.conftest import ModelServer, register_version, unique

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("bwrap") is None,
    reason="the sandbox needs root and bubblewrap",
)

SERVER_SECRET = "model-server-secret-3f9a1c"


class Spy(BaseEstimator):
    """Predicts, for each row, a JSON report of what its process could reach."""

    def __init__(self, ports: tuple[int, ...] = ()) -> None:
        self.ports = ports

    def fit(self, x: Any, y: Any = None) -> Spy:
        self.n_features_in_ = 1
        return self

    def predict(self, x: Any) -> np.ndarray:
        import socket

        if "PYTEST_CURRENT_TEST" in os.environ:  # MLflow predicts the input example when
            return np.array(["{}"] * len(x), dtype=object)  # logging, here in the test

        def attempt(action: Callable[[], Any]) -> str:
            try:
                action()
            except Exception as exc:
                return f"refused: {type(exc).__name__}"
            return "done"

        def connect(port: int) -> None:
            with socket.create_connection(("127.0.0.1", port), timeout=2):
                pass

        def write(path: str) -> None:
            with open(path, "w") as handle:
                handle.write("x")

        processes = []
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    with open(f"/proc/{entry}/cmdline", "rb") as handle:
                        processes.append(handle.read().replace(b"\0", b" ").decode())
                except OSError:
                    pass
        report = {
            "uid": os.getuid(),
            "environ": dict(os.environ),
            "processes": processes,
            "connect": {str(port): attempt(lambda p=port: connect(p)) for port in self.ports},
            "write_model_folder": attempt(lambda: write(os.path.join(os.getcwd(), "planted"))),
            "write_tmp": attempt(lambda: write("/tmp/scratch")),
        }
        return np.array([json.dumps(report)] * len(x), dtype=object)


class Fragile(BaseEstimator):
    """Dies on -1 and hangs on -2, as a model with a native bug or an endless loop would."""

    def fit(self, x: Any, y: Any = None) -> Fragile:
        self.n_features_in_ = 1
        return self

    def predict(self, x: Any) -> np.ndarray:
        value = float(np.asarray(x, dtype=float)[0][0])
        if value == -1:
            os._exit(3)
        if value == -2:
            time.sleep(600)
        return np.zeros(len(x), dtype=int)


def serve(model: BaseEstimator, start_server, move_alias) -> tuple[str, ModelServer]:  # type: ignore[no-untyped-def]
    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # no server can import this
    name = unique("sandboxed")
    version = register_version(model.fit([[0.0]]), np.array([[0.0]]), name)
    server = start_server(
        replica=unique("replica"),
        PREDICT_TIMEOUT_SECONDS="3",
        PLATFORM_SECRET_FOR_TEST=SERVER_SECRET,
    )
    move_alias(name, version)
    server.wait_serving(name, version, timeout=90)
    return name, server


def test_a_model_reaches_no_secret_no_service_and_nothing_of_the_server(
    start_server, move_alias, redis_url: str, mlflow_uri: str
) -> None:
    ports = (urlsplit(redis_url).port, urlsplit(mlflow_uri).port)
    name, server = serve(Spy(ports=ports), start_server, move_alias)  # type: ignore[arg-type]
    answer = httpx.post(f"{server.url}/predict/{name}", json={"data": [[1.0]]}, timeout=30)
    assert answer.status_code == 200, answer.text
    report = json.loads(answer.json()["predictions"][0])

    assert report["uid"] not in (0, os.getuid())
    assert SERVER_SECRET not in json.dumps(report)
    assert not {"REDIS_URL", "MLFLOW_TRACKING_URI", "PLATFORM_SECRET_FOR_TEST"} & set(
        report["environ"]
    )
    assert not any("uvicorn" in cmd or "pytest" in cmd for cmd in report["processes"])
    assert len(report["processes"]) < 5, report["processes"]
    assert all(result.startswith("refused") for result in report["connect"].values()), report
    assert report["write_model_folder"].startswith("refused")
    assert report["write_tmp"] == "done"  # its own private /tmp


def test_a_model_process_that_dies_or_hangs_fails_one_request_and_comes_back(
    start_server, move_alias
) -> None:
    name, server = serve(Fragile(), start_server, move_alias)
    url = f"{server.url}/predict/{name}"

    died = httpx.post(url, json={"data": [[-1.0]]}, timeout=30)
    assert died.status_code == 503, died.text
    assert "model process exited" in died.json()["detail"]
    assert httpx.post(url, json={"data": [[1.0]]}, timeout=60).json()["predictions"] == [0]

    started = time.monotonic()
    hung = httpx.post(url, json={"data": [[-2.0]]}, timeout=30)
    assert hung.status_code == 503, hung.text
    assert "did not answer within 3 s" in hung.json()["detail"]
    assert time.monotonic() - started < 20
    assert httpx.post(url, json={"data": [[1.0]]}, timeout=60).json()["predictions"] == [0]
