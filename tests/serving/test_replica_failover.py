"""Losing a model-server replica, or both swapping versions, loses no prediction through the
backend.

The backend is a real uvicorn process forwarding to two real replicas (MODEL_SERVER_URL lists
both); a steady stream of predictions goes through it while a replica is killed (SIGKILL of its
whole process group) or restarted (SIGTERM to its group, as supervisord's stopasgroup sends it),
or while a deploy and a rollback swap the version both replicas serve.
A replica's SIGTERM drain is also checked directly: it stops accepting, finishes the request it
was reading, then exits.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
from fastapi.testclient import TestClient
from mlflow import MlflowClient
from pydantic import ValidationError
from sklearn.dummy import DummyRegressor

from backend.app import create_app
from mlops_core.launch_commands import BACKEND_APP, uvicorn_command
from mlops_core.model_registry import set_served_version
from mlops_core.settings import Settings
from tests.conftest import TEST_ENCRYPTION_KEY
from tests.serving.conftest import REPO_ROOT, ModelServer, iris_like, register_version, unique
from tests.support.processes import ManagedProcess, free_port, wait_for, wait_http

ROW = [5.1, 3.5, 1.4, 0.2]
CLIENTS = 4
PAUSE_SECONDS = 0.02


@pytest.fixture(scope="module")
def model(registry: MlflowClient, serving_alias: str) -> str:
    x, y = iris_like()
    name = unique("failover")
    register_version(DummyRegressor(strategy="constant", constant=7.0).fit(x, y), x, name)
    set_served_version(registry, name, "1", serving_alias)
    return name


@dataclass
class Backend:
    url: str
    process: ManagedProcess


@pytest.fixture
def start_backend(
    server_env: dict[str, str], tmp_path: Path
) -> Iterator[Callable[[list[ModelServer]], Backend]]:
    """A backend process forwarding to the given replicas."""
    started: list[ManagedProcess] = []

    def start(replicas: list[ModelServer]) -> Backend:
        port = free_port()
        process = ManagedProcess(
            uvicorn_command(BACKEND_APP, port, log_level="warning"),
            env={
                **server_env,
                "MLOPS_HOME": str(tmp_path / "home"),
                "DATABASE_URL": f"sqlite:///{tmp_path / f'backend-{port}.db'}",
                "ENCRYPTION_KEY": TEST_ENCRYPTION_KEY,
                "MODEL_SERVER_URL": ",".join(replica.url for replica in replicas),
            },
            log_path=tmp_path / f"backend-{port}.log",
            cwd=REPO_ROOT,
        )
        started.append(process)
        url = f"http://127.0.0.1:{port}"
        wait_http(f"{url}/health", 60, process)
        return Backend(url, process)

    yield start
    for process in started:
        process.stop()


def answered_seven(body: dict[str, Any]) -> bool:
    """The `model` fixture's answer."""
    return bool(body["predictions"] == [7.0])


async def predictions_during(
    url: str,
    name: str,
    fault: Callable[[], None],
    *,
    before: float = 1.5,
    after: float = 2.0,
    valid: Callable[[dict[str, Any]], bool] = answered_seven,
) -> Counter[str]:
    """Predict steadily through the backend; run `fault` (in a thread) `before` seconds in, and
    keep predicting `after` seconds once it returns. Counts each answer's status or error
    ("ok": a 200 whose body is `valid`)."""
    outcomes: Counter[str] = Counter()
    done = asyncio.Event()
    async with httpx.AsyncClient(base_url=url, timeout=60) as client:

        async def client_loop() -> None:
            while not done.is_set():
                try:
                    answer = await client.post(f"/models/{name}/predict", json={"data": [ROW]})
                    ok = answer.status_code == 200 and valid(answer.json())
                    outcomes["ok" if ok else f"{answer.status_code} {answer.text[:200]}"] += 1
                except httpx.HTTPError as exc:
                    outcomes[f"{type(exc).__name__}: {exc}"] += 1
                await asyncio.sleep(PAUSE_SECONDS)

        clients = [asyncio.create_task(client_loop()) for _ in range(CLIENTS)]
        await asyncio.sleep(before)
        await asyncio.to_thread(fault)
        await asyncio.sleep(after)
        done.set()
        await asyncio.gather(*clients)
    return outcomes


def served_requests(server: ModelServer, name: str) -> int:
    return int(server.models()[name]["requests"])


def descendants(server: ModelServer) -> list[psutil.Process]:
    """The replica's model processes (in sessions of their own, out of its process group)."""
    assert server.process is not None
    return psutil.Process(server.process.pid).children(recursive=True)


def assert_all_ended(processes: list[psutil.Process]) -> None:
    def ended() -> bool:
        for process in processes:
            try:
                if process.status() != psutil.STATUS_ZOMBIE:
                    return False
            except psutil.NoSuchProcess:
                continue
        return True

    wait_for(ended, 15, 0.1, f"model processes {[p.pid for p in processes]} to end")


def test_killing_a_replica_under_load_fails_no_prediction(
    model: str,
    start_server: Callable[..., ModelServer],
    start_backend: Callable[[list[ModelServer]], Backend],
) -> None:
    a = start_server("failover-kill-a", MODEL_RECONCILE_INTERVAL_SECONDS="600")
    b = start_server("failover-kill-b", MODEL_RECONCILE_INTERVAL_SECONDS="600")
    for server in (a, b):
        server.wait_serving(model, "1")
    backend = start_backend([a, b])
    spread: list[int] = []
    children: list[psutil.Process] = []

    def kill_a() -> None:
        spread.extend([served_requests(a, model), served_requests(b, model)])
        children.extend(descendants(a))
        a.kill()

    outcomes = asyncio.run(predictions_during(backend.url, model, kill_a))
    assert set(outcomes) == {"ok"}, outcomes
    assert outcomes["ok"] > 50
    assert min(spread) > 0, f"requests per replica before the kill: {spread}"
    assert f"model server {a.url} unreachable" in backend.process.log_text()  # retried on b
    assert children, "replica a ran no model process"
    assert_all_ended(children)  # a dead replica takes its model processes along


def test_restarting_a_replica_with_sigterm_under_load_fails_no_prediction(
    model: str,
    start_server: Callable[..., ModelServer],
    start_backend: Callable[[list[ModelServer]], Backend],
) -> None:
    a = start_server("failover-restart-a", MODEL_RECONCILE_INTERVAL_SECONDS="600")
    b = start_server("failover-restart-b", MODEL_RECONCILE_INTERVAL_SECONDS="600")
    for server in (a, b):
        server.wait_serving(model, "1")
    backend = start_backend([a, b])

    children: list[psutil.Process] = []

    def restart_a() -> None:
        children.extend(descendants(a))
        a.stop()  # SIGTERM to its process group, then waits for it to exit
        a.start()  # same port; answers 503 until its first registry sync is done

    outcomes = asyncio.run(predictions_during(backend.url, model, restart_a, after=3.0))
    assert set(outcomes) == {"ok"}, outcomes
    assert f"model server {a.url} unreachable" in backend.process.log_text()  # retried on b
    a.wait_serving(model, "1")
    assert served_requests(a, model) > 0  # back in the rotation
    assert_all_ended(children)  # the old process stopped its model processes on the way out


def test_a_deploy_and_a_rollback_under_load_fail_no_prediction_and_both_replicas_follow(
    registry: MlflowClient,
    serving_alias: str,
    start_server: Callable[..., ModelServer],
    start_backend: Callable[[list[ModelServer]], Backend],
    move_alias: Callable[[str, str], None],
) -> None:
    x, y = iris_like()
    name = unique("replicas-swap")
    for value in (1, 2):
        model = DummyRegressor(strategy="constant", constant=float(value)).fit(x, y)
        assert register_version(model, x, name) == str(value)
    set_served_version(registry, name, "1", serving_alias)
    # A long reconcile interval: the announcements alone make these replicas swap.
    a = start_server("swap-a", MODEL_RECONCILE_INTERVAL_SECONDS="600")
    b = start_server("swap-b", MODEL_RECONCILE_INTERVAL_SECONDS="600")
    for server in (a, b):
        server.wait_serving(name, "1")
    backend = start_backend([a, b])
    answered_by: Counter[str] = Counter()

    def consistent(body: dict[str, Any]) -> bool:
        """One version answered the whole request (its constant is its version number)."""
        answered_by[body["model_version"]] += 1
        return bool(body["predictions"] == [float(body["model_version"])])

    def deploy_then_roll_back() -> None:
        for version in ("2", "1"):
            move_alias(name, version)
            for server in (a, b):
                server.wait_serving(name, version, timeout=30)
            # Both on the new version: predictions keep flowing through it for a while.
            time.sleep(1.0)

    outcomes = asyncio.run(
        predictions_during(backend.url, name, deploy_then_roll_back, valid=consistent)
    )
    assert set(outcomes) == {"ok"}, outcomes
    assert set(answered_by) == {"1", "2"}, answered_by
    assert min(served_requests(a, name), served_requests(b, name)) > 0  # both in the rotation


def test_a_replica_still_loading_is_skipped(
    model: str,
    start_server: Callable[..., ModelServer],
    start_backend: Callable[[list[ModelServer]], Backend],
) -> None:
    good = start_server("failover-good", MODEL_RECONCILE_INTERVAL_SECONDS="600")
    good.wait_serving(model, "1")
    # Its registry never answers, so its first sync never ends: it answers 503, not 404.
    loading = start_server(
        "failover-loading", wait=False, MLFLOW_TRACKING_URI=f"http://127.0.0.1:{free_port()}"
    )
    assert loading.process is not None
    wait_http(f"{loading.url}/health", 60, loading.process)
    direct = httpx.post(f"{loading.url}/predict/{model}", json={"data": [ROW]}, timeout=10)
    assert direct.status_code == 503

    only_loading = start_backend([loading])
    answer = httpx.post(
        f"{only_loading.url}/models/{model}/predict", json={"data": [ROW]}, timeout=30
    )
    assert (answer.status_code, answer.json()) == (503, direct.json())  # passed through

    both = start_backend([loading, good])
    with httpx.Client(base_url=both.url, timeout=30) as client:
        for _ in range(6):  # round robin: every other one goes to the loading replica first
            answer = client.post(f"/models/{model}/predict", json={"data": [ROW]})
            assert answer.status_code == 200, answer.text
            assert answer.json()["predictions"] == [7.0]


def refuses_connections(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except ConnectionRefusedError:
        return True
    return False


def test_sigterm_drains_a_replica(model: str, start_server: Callable[..., ModelServer]) -> None:
    """Stop accepting, finish the request in flight (its body still arriving), then exit."""
    server = start_server("failover-drain", MODEL_RECONCILE_INTERVAL_SECONDS="600")
    server.wait_serving(model, "1")
    assert server.process is not None
    body = f'{{"data": [{ROW}]}}'.encode()
    head = (
        f"POST /predict/{model} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode()
    children = descendants(server)
    assert children, "the replica runs no model process"
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as in_flight:
        in_flight.sendall(head + body[:5])
        time.sleep(0.3)  # the server has read the head: the request is in progress
        os.killpg(server.process.pid, signal.SIGTERM)  # as supervisord's stopasgroup does
        wait_for(lambda: refuses_connections(server.port), 10, 0.05, "new connections refused")
        assert server.process.alive()  # still draining
        # The group's SIGTERM did not reach the model processes: they answer what is in flight.
        assert all(child.status() != psutil.STATUS_ZOMBIE for child in children)
        in_flight.sendall(body[5:])
        answer = in_flight.makefile("rb").read().decode()
    assert answer.startswith("HTTP/1.1 200"), answer
    assert '"predictions":[7.0]' in answer
    assert "is gone; restarting" not in server.process.log_text()
    # Once drained and shut down, uvicorn re-raises the SIGTERM it caught: it ends "killed" by it.
    assert server.process.proc.wait(30) == -signal.SIGTERM
    assert_all_ended(children)


def test_model_server_url_lists_replicas(database_url: str, server_env: dict[str, str]) -> None:
    settings = Settings(
        model_server_url=" http://10.0.0.5:8001/ ,http://10.0.0.6:8001",
        database_url=database_url,
    )
    assert settings.model_server_urls == ["http://10.0.0.5:8001", "http://10.0.0.6:8001"]
    with pytest.raises(ValidationError, match="MODEL_SERVER_URL entries must be"):
        Settings(model_server_url="http://10.0.0.5:8001,10.0.0.6:8001", database_url=database_url)


def test_ready_while_one_replica_answers(
    model: str,
    start_server: Callable[..., ModelServer],
    database_url: str,
    server_env: dict[str, str],
) -> None:
    live = start_server("failover-ready", MODEL_RECONCILE_INTERVAL_SECONDS="600")
    dead = f"http://127.0.0.1:{free_port()}"

    def model_server_check(urls: str) -> str:
        settings = Settings(
            database_url=database_url,
            redis_url=server_env["REDIS_URL"],
            mlflow_tracking_uri=server_env["MLFLOW_TRACKING_URI"],
            model_server_url=urls,
        )
        with TestClient(create_app(settings)) as client:
            return str(client.get("/ready").json()["checks"]["model_server"])

    assert model_server_check(f"{dead},{live.url}") == "ok"
    down = model_server_check(f"{dead},{dead}/")
    assert down.count(f"{dead}: ConnectError") == 2, down
