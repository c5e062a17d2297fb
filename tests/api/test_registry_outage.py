"""The backend never stalls on MLflow: model endpoints wait on threads of their own, answer 503
naming MLflow, then at once while it stays down; webhooks and pipeline reads are not held up."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from backend.registry_gate import CircuitBreaker
from tests.api.conftest import Api, LiveBackend, dead_url, github_url
from tests.conftest import SQLITE_ONLY
from tests.support.black_hole import BlackHole
from tests.support.github import delivery, ping_payload
from tests.support.processes import wait_for
from tests.support.services import MlflowServer

PENDING_MODEL_REQUESTS = 50
REGISTRY_THREADS = 8


async def _outage_scenario(url: str, hole: BlackHole, secret: str, repo_url: str) -> None:
    limits = httpx.Limits(max_connections=PENDING_MODEL_REQUESTS + 10)
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as client:
        models = [asyncio.create_task(client.get("/models")) for _ in range(PENDING_MODEL_REQUESTS)]
        # Every registry thread gets stuck on the silent MLflow; the other requests queue.
        await asyncio.to_thread(
            wait_for, lambda: hole.accepted >= REGISTRY_THREADS, 30, 0.05, "registry threads stuck"
        )

        for _ in range(10):
            ping = delivery(ping_payload(repo_url), secret, event="ping")
            answer = await client.post("/webhook/github", content=ping.body, headers=ping.headers)
            assert answer.status_code == 200, answer.text
            assert answer.json()["status"] == "pong"
            listing = await client.get("/pipelines")
            assert listing.status_code == 200, listing.text
        # All that was answered while every model request still waited on MLflow.
        assert not any(task.done() for task in models)

        answers = await asyncio.gather(*models)
        assert {answer.status_code for answer in answers} == {503}
        assert all("MLflow" in answer.json()["detail"] for answer in answers)
        assert any(f"MLflow at {hole.url} is unreachable" in a.json()["detail"] for a in answers)

        # The breaker is open: the next model request is refused without asking MLflow.
        started = time.monotonic()
        refused = await client.get("/models/anything")
        assert time.monotonic() - started < 3  # not the 10 s a silent MLflow costs
        assert refused.status_code == 503
        assert f"MLflow at {hole.url} is unreachable" in refused.json()["detail"]
        assert int(refused.headers["retry-after"]) >= 1


def test_webhooks_and_pipeline_reads_answer_while_model_requests_wait_on_a_silent_mlflow(
    start_backend: Callable[..., LiveBackend], queue_redis_url: str, tmp_path: Path
) -> None:
    with BlackHole() as hole:
        backend = start_backend(
            DATABASE_URL=f"sqlite:///{tmp_path / 'stall.db'}",
            REDIS_URL=queue_redis_url,
            MLFLOW_TRACKING_URI=hole.url,
            MODEL_SERVER_URL=dead_url(),
            REGISTRY_TIMEOUT_SECONDS="10",
            REGISTRY_THREADS=str(REGISTRY_THREADS),
            REGISTRY_BREAKER_RESET_SECONDS="60",
        )
        repo = httpx.post(f"{backend.url}/repos", json={"github_url": github_url()}).json()
        asyncio.run(_outage_scenario(backend.url, hole, repo["webhook_secret"], repo["github_url"]))
        assert backend.process.alive()


@SQLITE_ONLY
def test_model_endpoints_name_a_stopped_mlflow_and_recover_when_it_is_back(
    make_api: Callable[..., Api], tmp_path: Path
) -> None:
    mlflow = MlflowServer(tmp_path / "mlflow")  # not started yet: its port refuses connections
    api = make_api(
        mlflow_tracking_uri=mlflow.uri,
        registry_breaker_failures=2,
        registry_breaker_reset_seconds=1,
    )
    for _ in range(2):
        response = api.client.get("/models")
        assert response.status_code == 503
        assert response.json()["detail"] == (
            f"MLflow at {mlflow.uri} is unreachable: connection refused"
        )
    for method, path, body in (
        ("get", "/models", None),
        ("get", "/models/iris", None),
        ("get", "/models/iris/history", None),
        ("post", "/models/iris/deploy", {"version": "1"}),
        ("post", "/models/iris/rollback", None),
        ("delete", "/models/iris", None),
    ):
        response = api.client.request(method, path, json=body)
        assert response.status_code == 503, (method, path, response.text)
        assert "not asked again" in response.json()["detail"], (method, path)
        assert "retry-after" in response.headers
    assert api.client.get("/pipelines").status_code == 200
    try:
        mlflow.start()
        # After REGISTRY_BREAKER_RESET_SECONDS one request tries MLflow again and closes it.
        wait_for(lambda: api.client.get("/models").status_code == 200, 30, 0.3, "/models 200")
        assert api.client.get("/models").json() == []
        assert api.client.get("/models/iris").status_code == 404  # MLflow's answer again
    finally:
        mlflow.stop()


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_breaker_opens_after_consecutive_failures_and_lets_one_probe_through() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(failures=3, reset_seconds=10, clock=clock)
    assert breaker.admit() is False  # closed: admitted, not a probe
    breaker.failed("connection refused")
    breaker.failed("connection refused")
    breaker.succeeded()  # an answer resets the count
    for _ in range(2):
        breaker.failed("connection refused")
    assert not breaker.is_open()
    breaker.failed("connection refused")
    assert breaker.is_open() and breaker.admit() is None
    assert breaker.retry_after() == pytest.approx(10)

    clock.now += 10
    assert breaker.admit() is True  # the probe
    assert breaker.admit() is None  # only one at a time
    breaker.release_probe()  # it never ran (cancelled while queued): the next call probes
    assert breaker.admit() is True
    breaker.failed("no answer within 5 s")  # a failed probe opens it again at once
    assert breaker.admit() is None
    assert breaker.retry_after() == pytest.approx(10)
    assert breaker.last_error == "no answer within 5 s"

    clock.now += 10
    assert breaker.admit() is True
    breaker.succeeded()
    assert not breaker.is_open() and breaker.admit() is False
