"""Metrics every HTTP service of the platform exports, under seed 001's names.

`api_requests_total`, `api_request_duration_seconds` and `api_errors_total` are counted by one
ASGI middleware, labelled with the route *template* (`/predict/{name}`, never the raw path, so
a scraper's series stay bounded whatever clients send); requests no route matched share
`endpoint="unmatched"`. `process_memory_rss_bytes`, `process_cpu_percent` and
`process_thread_count` are read from the process at scrape time.

A service running several processes sets PROMETHEUS_MULTIPROC_DIR (prometheus-client's
multiprocess mode): counters and histograms are then summed across its processes at scrape
time, and the process gauges describe the process that answered the scrape.
"""

from __future__ import annotations

import functools
import os
import time
from collections.abc import Iterator
from typing import Any

import psutil
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    multiprocess,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

UNMATCHED = "unmatched"

API_REQUESTS = Counter(
    "api_requests",
    "HTTP requests answered, by method, route template and status code.",
    ["method", "endpoint", "status"],
)
API_DURATION = Histogram(
    "api_request_duration_seconds",
    "Time from a request's arrival to the end of its answer, by method and route template.",
    ["method", "endpoint"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
API_ERRORS = Counter(
    "api_errors",
    "Requests that ended in an exception (answered 500) or a 5xx, by route template and type.",
    ["endpoint", "type"],
)


class RequestMetrics:
    """Pure ASGI middleware (no per-request task or body copy): counts and times each request."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_counting(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        error: str | None = None
        try:
            await self.app(scope, receive, send_counting)
        except Exception as exc:
            error = type(exc).__name__
            raise
        finally:
            endpoint = route_template(scope)
            method = scope["method"]
            API_REQUESTS.labels(method, endpoint, str(status)).inc()
            API_DURATION.labels(method, endpoint).observe(time.perf_counter() - started)
            if error is not None or status >= 500:
                API_ERRORS.labels(endpoint, error or f"http_{status}").inc()


def route_template(scope: Scope) -> str:
    """The path template of the route that handled the request (set by FastAPI's router)."""
    route = scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) else UNMATCHED


class ProcessMetrics(Collector):
    """The answering process's memory, CPU share and threads, read when scraped."""

    def __init__(self) -> None:
        self._process = psutil.Process(os.getpid())
        self._process.cpu_percent(None)  # the first reading starts the interval

    def collect(self) -> Iterator[Any]:
        with self._process.oneshot():
            rss = self._process.memory_info().rss
            cpu = self._process.cpu_percent(None)
            threads = self._process.num_threads()
        yield GaugeMetricFamily(
            "process_memory_rss_bytes", "Resident memory of the process.", value=rss
        )
        yield GaugeMetricFamily(
            "process_cpu_percent",
            "CPU use of the process since the previous scrape, in percent of one core.",
            value=cpu,
        )
        yield GaugeMetricFamily("process_thread_count", "Threads of the process.", value=threads)


@functools.cache
def exposition_registry() -> CollectorRegistry:
    """The registry a service's /metrics serves: multiprocess-aware, plus process gauges.

    One per process (the process collector keeps the CPU interval between scrapes).
    """
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
    else:
        registry = REGISTRY
    registry.register(ProcessMetrics())
    return registry


def exposition(registry: CollectorRegistry) -> tuple[bytes, str]:
    """The body and content type of a scrape."""
    return generate_latest(registry), CONTENT_TYPE_LATEST
