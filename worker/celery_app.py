"""The worker's Celery application (start it with `celery -A worker.celery_app worker`).

WORKER_CONCURRENCY sets how many pipelines one worker runs at once (prefork processes);
any number of workers on the same Redis share the `pipelines` queue.
"""

import logging
from typing import Any

import redis
from celery.signals import celeryd_after_setup, worker_init

from mlops_core import sandbox
from mlops_core.database import upgrade_database
from mlops_core.settings import get_settings
from mlops_core.task_queue import KERNEL_ISOLATION_KEY, make_celery

logger = logging.getLogger(__name__)

app = make_celery(get_settings(), name="worker")
app.conf.imports = ("worker.tasks",)


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
