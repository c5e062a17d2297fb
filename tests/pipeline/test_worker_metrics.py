"""The worker's /metrics server: the same token guard as the other services, and a taken port
costs the metrics, never the worker. (Counting through a real worker is tested with a live stack
in tests/serving/test_monitoring.py.)"""

from __future__ import annotations

import logging
import socket
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from mlops_core.settings import Settings
from tests.support.processes import free_port
from worker import metrics_server
from worker.metrics import KERNEL_PEAK_MEMORY, record_kernel_peak

METRICS = "metrics-token-4242"
ADMIN = "admin-token-4242"


@pytest.fixture
def served() -> Any:
    settings = Settings(
        worker_metrics_port=free_port(),
        metrics_token=SecretStr(METRICS),
        api_token=SecretStr(ADMIN),
    )
    server = metrics_server.serve(settings)
    assert server is not None
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    server.server_close()


def test_metrics_need_the_metrics_or_admin_token_when_one_is_set(served: str) -> None:
    def get(path: str = "/metrics", token: str | None = None) -> httpx.Response:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.get(f"{served}{path}", headers=headers, trust_env=False, timeout=10)

    missing = get()
    assert missing.status_code == 401
    assert "METRICS_TOKEN" in missing.text and missing.headers["WWW-Authenticate"] == "Bearer"
    assert get(token="wrong").status_code == 401
    for token in (METRICS, ADMIN):
        answer = get(token=token)
        assert answer.status_code == 200
        assert "mlops_pipelines_finished_total" in answer.text
        assert "process_memory_rss_bytes" in answer.text
    assert get("/", METRICS).status_code == 404


def test_a_taken_port_is_logged_and_the_worker_goes_on(caplog: pytest.LogCaptureFixture) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        taken = squatter.getsockname()[1]
        with caplog.at_level(logging.ERROR, logger=metrics_server.__name__):
            assert metrics_server.serve(Settings(worker_metrics_port=taken)) is None
    assert "WORKER_METRICS_PORT" in caplog.text and str(taken) in caplog.text


@pytest.mark.parametrize("reported", [None, "12", True, -5, 0, 1.5e9])
def test_a_kernel_peak_that_is_not_a_positive_count_is_ignored(reported: object) -> None:
    """The runner's events share a pipe the notebook could write to: take no odd value."""

    def observed() -> float:
        return next(
            s.value for s in KERNEL_PEAK_MEMORY.collect()[0].samples if s.name.endswith("_count")
        )

    before = observed()
    record_kernel_peak(reported)
    assert observed() == before
    record_kernel_peak(256 * 2**20)
    assert observed() == before + 1
