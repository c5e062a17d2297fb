"""The command lines that start each deployable, kept in one place.

The local stack, the tests and the benchmarks all start the same three programs; one
definition keeps their flags from drifting apart (a worker started without `-Q pipelines`
would silently take no pipeline).
"""

from __future__ import annotations

import sys
from pathlib import Path

from mlops_core.task_queue import PIPELINE_QUEUE

BACKEND_APP = "backend.app:create_app"
MODEL_SERVER_APP = "model_server.app:create_app"
MODEL_SERVER_LAUNCHER = "model_server.serve"
LOOPBACK = "127.0.0.1"


def _bin(bin_dir: Path | None, program: str) -> str:
    return str((bin_dir or Path(sys.executable).parent) / program)


def uvicorn_command(
    app: str,
    port: int,
    *,
    host: str = LOOPBACK,
    log_level: str | None = None,
    bin_dir: Path | None = None,
) -> list[str]:
    """`uvicorn <app> --factory` for the backend or the model server."""
    command = [_bin(bin_dir, "uvicorn"), app, "--factory", "--host", host, "--port", str(port)]
    if log_level:
        command += ["--log-level", log_level]
    return command


def model_server_command(
    port: int,
    *,
    host: str = LOOPBACK,
    log_level: str | None = None,
    bin_dir: Path | None = None,
) -> list[str]:
    """The model server: MODEL_SERVER_WORKERS processes on `port` (model_server/serve.py)."""
    command = [_bin(bin_dir, "python"), "-m", MODEL_SERVER_LAUNCHER]
    command += ["--host", host, "--port", str(port)]
    if log_level:
        command += ["--log-level", log_level]
    return command


def worker_command(
    *,
    concurrency: int = 1,
    node_name: str | None = None,
    loglevel: str = "INFO",
    bin_dir: Path | None = None,
) -> list[str]:
    """A Celery worker consuming the pipelines queue.

    `--quiet` drops the start banner (ASCII art and a config dump) from the log; the worker
    still logs where it connected and that it is ready. A named node also skips mingle and
    gossip: they only slow the start of a worker that shares nothing with its peers but the
    queue.
    """
    command = [
        _bin(bin_dir, "celery"),
        *("-A", "worker.celery_app", "--quiet", "worker", "-Q", PIPELINE_QUEUE),
        *("--concurrency", str(concurrency), "--loglevel", loglevel),
    ]
    if node_name:
        command += ["-n", node_name, "--without-mingle", "--without-gossip"]
    return command
