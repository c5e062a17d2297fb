"""The worker's Celery application (start it with `celery -A worker.celery_app worker`).

WORKER_CONCURRENCY sets how many pipelines one worker runs at once (prefork processes);
any number of workers on the same Redis share the `pipelines` queue. Its metrics are served on
WORKER_METRICS_PORT (worker/metrics_server.py).
"""

import atexit
import logging
import os
import shutil
import sys
import tempfile
from typing import Any

import redis
from celery.signals import (
    celeryd_after_setup,
    import_modules,
    worker_init,
    worker_process_shutdown,
)

from mlops_core import sandbox
from mlops_core.database import upgrade_database
from mlops_core.service_logging import quiet_libraries
from mlops_core.settings import get_settings
from mlops_core.task_queue import KERNEL_ISOLATION_KEY, make_celery

logger = logging.getLogger(__name__)

app = make_celery(get_settings(), name="worker")
app.conf.imports = ("worker.tasks",)

MULTIPROC_DIR_VARIABLE = "PROMETHEUS_MULTIPROC_DIR"
# The folder this worker made for its metrics (None: it serves none).
_metrics_folder: str | None = None


@import_modules.connect
def _private_metrics_dir(**_: Any) -> None:
    """Give this worker's processes a fresh private folder to write their metrics to.

    Runs just before Celery imports the task modules, and with them prometheus-client, which
    reads PROMETHEUS_MULTIPROC_DIR once, at import. Fresh, because files left by an earlier run
    would add its counts to this one's; private (0700), because the pool processes write there.
    """
    global _metrics_folder
    if get_settings().worker_metrics_port == 0:
        return
    if "prometheus_client" in sys.modules:
        logger.error(
            "worker metrics not served: prometheus_client was imported before %s could be set",
            MULTIPROC_DIR_VARIABLE,
        )
        return
    _metrics_folder = tempfile.mkdtemp(prefix="mlops-worker-metrics-")
    os.environ[MULTIPROC_DIR_VARIABLE] = _metrics_folder
    atexit.register(_remove_metrics_folder, _metrics_folder, os.getpid())


def _remove_metrics_folder(folder: str, owner: int) -> None:
    """At exit of the process that made it (pool processes inherit atexit handlers)."""
    if os.getpid() == owner:
        shutil.rmtree(folder, ignore_errors=True)


@celeryd_after_setup.connect
def _quiet_libraries(**_: Any) -> None:
    """MLflow's records into Celery's log at their own level, without progress bars or run
    links (mlops_core/service_logging.py); the pool processes inherit this."""
    quiet_libraries()


@celeryd_after_setup.connect
def _serve_metrics(**_: Any) -> None:
    """Answer scrapes from the main process once the worker is set up: after its logging (so a
    taken port is reported in its log) and before the pool starts."""
    if _metrics_folder is None:
        return
    # Imported here, not at the top: this module is imported before _private_metrics_dir runs.
    from worker import metrics_server

    metrics_server.serve(get_settings())


@worker_process_shutdown.connect
def _forget_pool_process(pid: int, **_: Any) -> None:
    if _metrics_folder is not None:
        from worker import metrics_server

        metrics_server.forget_process(pid)


@worker_init.connect
def _migrate(**_: Any) -> None:
    """Bring the schema up to date before the first task (the worker may start first)."""
    upgrade_database(get_settings().database_url)


@celeryd_after_setup.connect
def _report_isolation(sender: str, **_: Any) -> None:
    """Say at start what contains notebooks, or why none will run (see mlops_core/sandbox.py),
    in the log and to /ready (which shows it for every worker that answers)."""
    settings = get_settings()
    try:
        found = sandbox.ensure_available(settings)
    except sandbox.SandboxUnavailable as exc:
        logger.error("kernel sandbox unavailable; every pipeline will fail until fixed: %s", exc)
        state = f"unavailable: {exc}"
    else:
        (logger.info if found.enabled else logger.warning)(
            "kernel isolation: %s", found.description
        )
        state = "ok" if found.enabled else found.description
    try:
        with redis.Redis.from_url(settings.redis_url) as client:
            client.hset(KERNEL_ISOLATION_KEY, sender, state)
    except redis.RedisError as exc:
        logger.warning("could not report the kernel isolation to /ready: %s", exc)
