"""Notices a cancel request for one running pipeline, within a fraction of a second.

The backend sets `pipelines.cancel_requested` and publishes the id on CANCEL_CHANNEL. The
message makes the stop prompt; the database flag makes it certain (a message published before
this watcher subscribed, or lost with a Redis blip, is caught by the next poll).
"""

from __future__ import annotations

import contextlib
import logging
import threading

import redis

from mlops_core.database import session_scope
from mlops_core.schema import Pipeline
from mlops_core.states import PipelineStatus
from mlops_core.task_queue import CANCEL_CHANNEL

logger = logging.getLogger(__name__)
DB_POLL_SECONDS = 2.0


class CancelWatcher:
    """A daemon thread that sets `event` when the pipeline's cancel is requested."""

    def __init__(self, client: redis.Redis, database_url: str, pipeline_id: int) -> None:
        self.event = threading.Event()
        self._client = client
        self._database_url = database_url
        self._pipeline_id = pipeline_id
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name=f"cancel-watch-{pipeline_id}", daemon=True
        )

    def __enter__(self) -> CancelWatcher:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def requested_in_db(self) -> bool:
        with session_scope(self._database_url) as session:
            pipeline = session.get(Pipeline, self._pipeline_id)
            return (
                pipeline is None
                or bool(pipeline.cancel_requested)
                or pipeline.status == PipelineStatus.CANCELLED
            )

    def _run(self) -> None:
        pubsub = None
        waited = DB_POLL_SECONDS
        while not self._stop.is_set() and not self.event.is_set():
            try:
                if pubsub is None:
                    pubsub = self._client.pubsub(ignore_subscribe_messages=True)
                    pubsub.subscribe(CANCEL_CHANNEL)
                message = pubsub.get_message(timeout=0.25)
                if message and _decode(message["data"]) == str(self._pipeline_id):
                    self.event.set()
            except redis.RedisError:
                logger.warning("cancel watch: Redis unavailable, relying on the database")
                pubsub = None
                self._stop.wait(0.5)
            waited += 0.25
            if waited >= DB_POLL_SECONDS:
                waited = 0.0
                try:
                    if self.requested_in_db():
                        self.event.set()
                except Exception:
                    logger.exception("cancel watch: database check failed")
        if pubsub is not None:
            with contextlib.suppress(redis.RedisError):
                pubsub.close()


def _decode(data: object) -> str:
    return data.decode() if isinstance(data, bytes) else str(data)
