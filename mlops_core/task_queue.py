"""The Celery application's configuration, shared by the backend (which sends) and the worker.

The backend sends tasks by name, so it never imports the worker package. Settings aim at
"never lost, never run twice by accident": the message is acked only after the task ends,
a worker lost mid-task puts the message back, each worker process reserves one task at a
time, and Redis' visibility timeout is longer than the longest allowed pipeline.
"""

from __future__ import annotations

import base64
import json

import redis
from celery import Celery

from mlops_core.settings import Settings

PIPELINE_QUEUE = "pipelines"
RUN_PIPELINE_TASK = "mlops.run_pipeline"


def make_celery(settings: Settings, name: str = "mlops") -> Celery:
    """A Celery app bound to REDIS_URL with the delivery guarantees the platform relies on."""
    app = Celery(name, broker=settings.redis_url)
    app.conf.update(
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_default_queue=PIPELINE_QUEUE,
        task_routes={RUN_PIPELINE_TASK: {"queue": PIPELINE_QUEUE}},
        task_ignore_result=True,
        task_serializer="json",
        accept_content=["json"],
        broker_connection_retry_on_startup=True,
        broker_transport_options={
            "visibility_timeout": settings.pipeline_timeout_seconds + 300,
        },
        worker_concurrency=settings.worker_concurrency,
        worker_hijack_root_logger=False,
        broker_pool_limit=10,
    )
    return app


def waiting_pipeline_ids(client: redis.Redis) -> set[int]:
    """Ids of the pipelines whose message waits on the broker for a worker to take it.

    Read from Celery's Redis transport as it stores a queue: a list named after the queue, each
    entry a JSON envelope whose body (base64, as `properties.body_encoding` says) is Celery's
    message protocol 2, `[args, kwargs, embed]`. A message a worker took is no longer in the
    list. An entry that cannot be read is left out: at worst its pipeline is sent once more,
    which the runner's claim makes harmless. Raises what redis-py raises when Redis is down.
    """
    ids: set[int] = set()
    for raw in client.lrange(PIPELINE_QUEUE, 0, -1):
        try:
            envelope = json.loads(raw)
            if envelope["headers"]["task"] != RUN_PIPELINE_TASK:
                continue
            body = envelope["body"]
            if envelope["properties"].get("body_encoding") == "base64":
                body = base64.b64decode(body)
            args = json.loads(body)[0]
            ids.add(int(args[0]))
        except (ValueError, KeyError, IndexError, TypeError):
            continue
    return ids


# Backend → worker: a pipeline id published here asks the worker running it to stop now.
CANCEL_CHANNEL = "mlops:pipeline-cancel"
# Worker → backend: a hash of worker node name → what contains its notebooks, as /ready shows
# it ("ok" when sandboxed, else why not); /ready reads the entries of the nodes that answer.
KERNEL_ISOLATION_KEY = "mlops:kernel-isolation"
SANDBOX_OFF_STATE = "off: notebooks run unconfined as the worker's user (KERNEL_SANDBOX=off)"


def answering_workers(
    app: Celery,
    *,
    timeout: float,
    queue: str | None = None,
    destination: list[str] | None = None,
) -> list[str]:
    """Node names of the workers that answer a control broadcast within `timeout` seconds.

    `queue` keeps only workers consuming that queue (a worker on other queues would never run
    a pipeline); `destination` asks only the named nodes and returns as soon as all answered.
    Without one the call waits the whole timeout (any number of workers may answer), so run it
    off the event loop. Raises what kombu raises when the broker is unreachable.
    """
    limit = len(destination) if destination else None
    inspector = app.control.inspect(destination=destination, timeout=timeout, limit=limit)
    replies = inspector.active_queues() or {}
    return sorted(
        node
        for node, queues in replies.items()
        if queue is None or any(q.get("name") == queue for q in queues or [])
    )
