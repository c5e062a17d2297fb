"""The worker's Celery application (start it with `celery -A worker.celery_app worker`).

WORKER_CONCURRENCY sets how many pipelines one worker runs at once (prefork processes);
any number of workers on the same Redis share the `pipelines` queue.
"""

import logging
from typing import Any

from celery.signals import worker_init

from mlops_core.database import upgrade_database
from mlops_core.settings import get_settings
from mlops_core.task_queue import make_celery
from worker import isolation

logger = logging.getLogger(__name__)

app = make_celery(get_settings(), name="worker")
app.conf.imports = ("worker.tasks",)


@worker_init.connect
def _migrate(**_: Any) -> None:
    """Bring the schema up to date before the first task (the worker may start first)."""
    upgrade_database(get_settings().database_url)


@worker_init.connect
def _report_isolation(**_: Any) -> None:
    """Say at start what contains notebooks, or why none will run (see worker/isolation.py)."""
    try:
        found = isolation.ensure_available(get_settings())
    except isolation.SandboxUnavailable as exc:
        logger.error("kernel sandbox unavailable; every pipeline will fail until fixed: %s", exc)
        return
    if found.enabled:
        logger.info("kernel isolation: %s", found.description)
    else:
        logger.warning("kernel isolation: %s", found.description)
