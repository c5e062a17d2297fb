"""Liveness, readiness naming what is down, and the metrics endpoint."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from tests.api.conftest import Api
from tests.support.services import RedisServer


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
        api = make_api(redis_url=redis_server.url, mlflow_tracking_uri=mlflow_uri)
        partly = api.client.get("/ready")
        assert partly.status_code == 503
        body = partly.json()
        assert body["status"] == "not ready"
        assert body["down"] == ["model_server"]
        assert body["checks"]["database"] == body["checks"]["redis"] == "ok"
        assert body["checks"]["mlflow"] == "ok"
        assert "ConnectError" in body["checks"]["model_server"]

        redis_server.stop()
        worse = api.client.get("/ready").json()
        assert worse["down"] == ["redis", "model_server"]
    finally:
        redis_server.stop()


def test_ready_when_every_part_answers(
    make_api: Callable[..., Api], mlflow_uri: str, tmp_path: Path
) -> None:
    """Every part up: MLflow stands in for the model server too (both answer GET /health)."""
    api = make_api(mlflow_tracking_uri=mlflow_uri, model_server_url=mlflow_uri)
    response = api.client.get("/ready")
    assert response.status_code == 200, response.text
    assert response.json() == {
        "status": "ready",
        "checks": {"database": "ok", "redis": "ok", "mlflow": "ok", "model_server": "ok"},
        "down": [],
    }


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
