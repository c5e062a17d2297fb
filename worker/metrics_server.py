"""The worker's GET /metrics, answered by its main process on WORKER_METRICS_HOST:PORT.

Celery's prefork pool runs pipelines in child processes, which count in worker/metrics.py; the
process that answers a scrape is the parent. prometheus-client's multiprocess mode joins them:
every process writes its values to memory-mapped files in PROMETHEUS_MULTIPROC_DIR, and a
scrape sums the files (mlops_core/service_metrics.py `exposition_registry`, which also adds the
main process's own process gauges). worker/celery_app.py sets that folder up before the task
modules import prometheus-client, and starts this server once the worker is initialised.

It answers /metrics only, with the same guard as the backend's and the model server's:
METRICS_TOKEN (or API_TOKEN) as a bearer token when METRICS_TOKEN is set. A scrape reads files
and takes milliseconds, so the standard library's threaded WSGI server is enough.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import multiprocess

from mlops_core.access_tokens import CHALLENGE, METRICS, bearer_token, refusal
from mlops_core.service_metrics import exposition, exposition_registry
from mlops_core.settings import Settings

logger = logging.getLogger(__name__)

StartResponse = Callable[[str, list[tuple[str, str]]], Any]
WsgiApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]


class _ThreadingServer(ThreadingMixIn, WSGIServer):
    """One thread per scrape, so a slow scraper never holds up the next."""

    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """No access line per scrape: Prometheus calls every 15 s, forever."""


def metrics_app(settings: Settings) -> WsgiApp:
    """The WSGI application: GET /metrics, guarded by METRICS_TOKEN when it is set."""

    def app(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        if environ.get("PATH_INFO") != "/metrics":
            start_response("404 Not Found", [("Content-Type", "text/plain")])
            return [b"not found: the worker answers /metrics only\n"]
        refused = refusal(settings, METRICS, bearer_token(environ.get("HTTP_AUTHORIZATION")))
        if refused is not None:
            start_response("401 Unauthorized", [("Content-Type", "text/plain"), *CHALLENGE.items()])
            return [refused.http_detail.encode() + b"\n"]
        body, content_type = exposition(exposition_registry())
        start_response(
            "200 OK", [("Content-Type", content_type), ("Content-Length", str(len(body)))]
        )
        return [body]

    return app


def serve(settings: Settings) -> WSGIServer | None:
    """Answer scrapes from a daemon thread; None (and an error logged) when the port is taken.

    A worker whose metrics port is taken still runs pipelines: losing its metrics is better
    than losing the worker, and the error names the setting to change.
    """
    host, port = settings.worker_metrics_host, settings.worker_metrics_port
    try:
        server = make_server(
            host,
            port,
            metrics_app(settings),
            server_class=_ThreadingServer,
            handler_class=_QuietHandler,
        )
    except OSError as exc:
        logger.error(
            "worker metrics not served: cannot listen on %s:%s (%s); set WORKER_METRICS_PORT "
            "to a free port, or 0 for none",
            host,
            port,
            exc,
        )
        return None
    threading.Thread(target=server.serve_forever, name="worker-metrics", daemon=True).start()
    logger.info("worker metrics at http://%s:%s/metrics", host, server.server_port)
    return server


def forget_process(pid: int) -> None:
    """Drop a pool process's live-gauge files when it exits (its counters and histograms stay:
    what a recycled process counted still happened)."""
    multiprocess.mark_process_dead(pid)
