"""The worker's Celery application (start it with `celery -A worker.celery_app worker`)."""

from mlops_core.settings import get_settings
from mlops_core.task_queue import make_celery

app = make_celery(get_settings(), name="worker")
app.conf.imports = ("worker.tasks",)
