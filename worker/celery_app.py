"""The worker's Celery application (start it with `celery -A worker.celery_app worker`).

WORKER_CONCURRENCY sets how many pipelines one worker runs at once (prefork processes);
any number of workers on the same Redis share the `pipelines` queue.
"""

from typing import Any

from celery.signals import worker_init

from mlops_core.database import upgrade_database
from mlops_core.settings import get_settings
from mlops_core.task_queue import make_celery

app = make_celery(get_settings(), name="worker")
app.conf.imports = ("worker.tasks",)


@worker_init.connect
def _migrate(**_: Any) -> None:
    """Bring the schema up to date before the first task (the worker may start first)."""
    upgrade_database(get_settings().database_url)
