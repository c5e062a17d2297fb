"""One worker at a time per pipeline, with fast take-over when the holder dies.

Celery with Redis redelivers a task whose worker vanished, and (after the visibility timeout)
even one whose worker is still busy. A short-lived Redis lock kept alive by a heartbeat makes
the second delivery wait for the first to end; if the holder was killed, its lock expires
within LOCK_TTL_SECONDS and the new delivery takes over the pipeline.
"""

from __future__ import annotations

import logging
import threading
from types import TracebackType

import redis
from redis.exceptions import LockError

logger = logging.getLogger(__name__)
LOCK_TTL_SECONDS = 15
HEARTBEAT_SECONDS = 5


class PipelineRunLock:
    """Context manager; `acquired` says whether this process now owns the pipeline."""

    def __init__(self, client: redis.Redis, pipeline_id: int, wait_seconds: float) -> None:
        self._lock = client.lock(
            f"mlops:pipeline-run:{pipeline_id}",
            timeout=LOCK_TTL_SECONDS,
            sleep=0.5,
            blocking_timeout=wait_seconds,
            thread_local=False,
        )
        self._stop = threading.Event()
        self._heartbeat = threading.Thread(target=self._beat, daemon=True)
        self.acquired = False

    def __enter__(self) -> PipelineRunLock:
        self.acquired = bool(self._lock.acquire())
        if self.acquired:
            self._heartbeat.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if not self.acquired:
            return
        self._stop.set()
        self._heartbeat.join(timeout=5)
        try:
            self._lock.release()
        except (LockError, redis.RedisError):
            logger.warning("pipeline run lock was already gone at release")

    def _beat(self) -> None:
        while not self._stop.wait(HEARTBEAT_SECONDS):
            try:
                self._lock.extend(LOCK_TTL_SECONDS, replace_ttl=True)
            except (LockError, redis.RedisError):
                logger.warning("could not extend the pipeline run lock")
