"""Liveness, readiness naming what is down, the worker count, and the metrics endpoint."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import redis
from celery import Celery
from redis.client import Monitor

from backend.worker_watch import NOT_CHECKED_YET
from mlops_core.settings import Settings
from tests.api.conftest import Api
from tests.conftest import SQLITE_ONLY
from tests.support.processes import ManagedProcess, wait_for
from tests.support.services import RedisServer

NO_WORKER = "no worker answered on queue 'pipelines'"
NO_WORKERS = {"queue": "pipelines", "count": 0, "nodes": [], "age_seconds": 0}


def test_health_is_up_while_parts_are_down(api: Api) -> None:
    response = api.client.get("/health")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_ready_names_each_part_that_is_down(
    make_api: Callable[..., Api], mlflow_uri: str, tmp_path: Path
) -> None:
    redis_server = RedisServer(tmp_path / "ready-redis")
    redis_server.start()
    try:
        api = make_api(
            redis_url=redis_server.url,
            mlflow_tracking_uri=mlflow_uri,
            worker_check_interval_seconds=0.2,
        )
        partly = api.client.get("/ready")
        assert partly.status_code == 503
        body = partly.json()
        assert body["status"] == "not ready"
        assert body["down"] == ["model_server"]
        assert body["checks"]["database"] == body["checks"]["redis"] == "ok"
        assert body["checks"]["mlflow"] == "ok"
        assert "ConnectError" in body["checks"]["model_server"]
        assert body["checks"]["worker"] == NO_WORKER
        assert body["workers"] | {"age_seconds": 0} == NO_WORKERS

        redis_server.stop()
        worse = api.client.get("/ready").json()
        assert worse["down"] == ["redis", "model_server"]

        def broker_error() -> dict[str, Any] | None:
            body = api.client.get("/ready").json()
            # The worker check runs in the background: its next pass names the broker error.
            return body if body["checks"]["worker"] not in ("ok", NO_WORKER) else None

        assert wait_for(broker_error, 30, 0.2)["workers"]["count"] == 0
    finally:
        redis_server.stop()


def test_ready_when_every_part_answers(
    make_api: Callable[..., Api],
    mlflow_uri: str,
    start_worker: Callable[..., ManagedProcess],
) -> None:
    """Every part up: MLflow stands in for the model server too (both answer GET /health).

    Without a worker the backend is still ready (webhooks are accepted and wait queued), but
    the worker is reported down; once a real worker runs it is counted.
    """
    api = make_api(mlflow_tracking_uri=mlflow_uri, model_server_url=mlflow_uri)
    required = {"database": "ok", "redis": "ok", "mlflow": "ok", "model_server": "ok"}
    response = api.client.get("/ready")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["workers"]["age_seconds"] >= 0
    assert body | {"workers": body["workers"] | {"age_seconds": 0}} == {
        "status": "ready",
        "checks": {**required, "worker": NO_WORKER, "sandbox": "ok"},
        "down": [],
        "workers": NO_WORKERS,
    }

    worker = start_worker(api.database_url, api.settings.redis_url)

    def worker_counted() -> dict[str, Any] | None:
        body = api.client.get("/ready").json()
        assert worker.alive(), worker.log_text()[-3000:]
        return body if body["workers"]["count"] >= 1 else None

    body = wait_for(worker_counted, 60, 0.5, "/ready to count the worker")
    assert body["status"] == "ready"
    assert body["checks"] == {**required, "worker": "ok", "sandbox": "ok"}
    assert body["workers"]["count"] == 1
    assert body["workers"]["nodes"][0].startswith("api-")


@contextmanager
def broadcasts_seen(redis_url: str) -> Iterator[list[str]]:
    """The Celery control broadcasts (PUBLISH to the pidbox channel) sent while in the block,
    as Redis's MONITOR sees them."""
    seen: list[str] = []
    end = f"end-of-watch-{uuid.uuid4().hex}"
    client = redis.Redis.from_url(redis_url)

    def watch(monitor: Monitor) -> None:
        while end not in (command := monitor.next_command()["command"]):
            if command.startswith("PUBLISH") and "pidbox" in command:
                seen.append(command[:200])

    with client.monitor() as monitor, ThreadPoolExecutor(1) as pool:
        watching = pool.submit(watch, monitor)
        try:
            yield seen
        finally:
            client.echo(end)
            watching.result(timeout=30)
    client.close()


@SQLITE_ONLY
def test_ready_serves_the_worker_check_from_memory_instead_of_broadcasting_per_request(
    make_api: Callable[..., Api],
    make_settings: Callable[..., Settings],
    start_worker: Callable[..., ManagedProcess],
    tmp_path: Path,
) -> None:
    """Asking the workers is a broadcast waiting out a one-second reply window: /ready answers
    from the background check's last sighting, with its age, and sends no broadcast itself."""
    redis_server = RedisServer(tmp_path / "watch-redis")
    redis_server.start()
    try:
        # A backend checking only once a minute: between its checks, /ready broadcasts nothing.
        worker = start_worker(make_settings().database_url, redis_server.url)
        celery = Celery(broker=redis_server.url)

        def worker_answers() -> bool:
            assert worker.alive(), worker.log_text()[-3000:]
            return bool(celery.control.ping(timeout=0.5))

        wait_for(worker_answers, 60, 0.2, "the worker to answer")
        celery.close()
        api = make_api(redis_url=redis_server.url, worker_check_interval_seconds=60)

        # /ready waits 1.5 s for the first check; a loaded machine can take longer to end it.
        # Polling /ready sends no broadcast, so waiting here does not disturb what is measured.
        def first_check_done() -> dict[str, Any] | None:
            answer = api.client.get("/ready").json()
            return answer["workers"] if answer["checks"]["worker"] != NOT_CHECKED_YET else None

        first = wait_for(first_check_done, 30, 0.2, "the backend's first worker check")
        with broadcasts_seen(redis_server.url) as broadcasts, ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(lambda _: api.client.get("/ready").json(), range(24)))
        assert broadcasts == [], "a /ready request broadcast to the workers"
        assert {answer["workers"]["count"] for answer in answers} == {first["count"]} == {1}
        assert all(a["workers"]["age_seconds"] >= first["age_seconds"] for a in answers)
        assert {answer["checks"]["worker"] for answer in answers} == {"ok"}
    finally:
        redis_server.stop()


@SQLITE_ONLY
def test_ready_says_when_notebooks_run_unconfined(
    make_api: Callable[..., Api], start_worker: Callable[..., ManagedProcess]
) -> None:
    """Each answering worker's own KERNEL_SANDBOX counts; the backend's is the fallback."""
    api = make_api(kernel_sandbox="off")
    body = api.client.get("/ready").json()
    assert body["checks"]["sandbox"].startswith("off: notebooks run unconfined")
    assert "sandbox" not in body["down"]  # shown, but no reason to take the backend out

    api = make_api()  # a backend configured with the sandbox on, and a worker with it off
    worker = start_worker(api.database_url, api.settings.redis_url, KERNEL_SANDBOX="off")

    def reported() -> str | None:
        assert worker.alive(), worker.log_text()[-3000:]
        state = api.client.get("/ready").json()["checks"]["sandbox"]
        return state if state != "ok" else None

    state = wait_for(reported, 60, 0.5, "/ready to show the worker's sandbox")
    assert state.startswith("api-") and ": off: notebooks run unconfined" in state


def test_metrics_endpoint_speaks_prometheus(api: Api) -> None:
    response = api.client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    for name in (
        "mlops_webhook_deliveries_total",
        "mlops_pipelines_created_total",
        "mlops_enqueue_failures_total",
        "mlops_pipelines_awaiting_enqueue",
    ):
        assert f"# TYPE {name.removesuffix('_total')}" in response.text


def test_requests_are_counted_by_route_template(api: Api) -> None:
    """`endpoint` is the route template: ids in paths never make new series."""
    series = 'api_requests_total{endpoint="/pipelines/{pipeline_id}",method="GET",status="404"}'

    def counted() -> float:
        for line in api.client.get("/metrics").text.splitlines():
            if line.startswith(series):
                return float(line.rsplit(" ", 1)[1])
        return 0.0

    before = counted()  # the registry is per process: other tests here count too
    for pipeline_id in (900001, 900002, 900003):
        assert api.client.get(f"/pipelines/{pipeline_id}").status_code == 404
    assert counted() == before + 3
    text = api.client.get("/metrics").text
    assert "900001" not in text
    assert "process_memory_rss_bytes" in text and "process_cpu_percent" in text
