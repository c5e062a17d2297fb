"""MLflow work of the backend's request handlers: threads of its own, bounded waits, a breaker.

The models API reads and moves the registry with MLflow's blocking client. On FastAPI's shared
thread pool, a few dozen requests waiting on an MLflow that did not answer took every thread,
and webhook intake and pipeline reads, which use that pool, waited behind them past GitHub's
10 s. So, for every request handler's MLflow work:

- it runs on a pool of its own (REGISTRY_THREADS): a stalled MLflow fills that pool only;
- each HTTP call MLflow's client makes from this process gives up after
  REGISTRY_TIMEOUT_SECONDS, without retrying (the client reads both from the environment only,
  so the backend sets them for its process while it runs), and a request that waits that long
  for a free thread answers 503 without running;
- a circuit breaker: after REGISTRY_BREAKER_FAILURES calls in a row found MLflow unreachable,
  calls answer 503 naming MLflow at once, for REGISTRY_BREAKER_RESET_SECONDS; then a single
  call tries MLflow again, and its outcome closes or reopens the breaker. Calls that were
  queued when the breaker opened are refused when they reach a thread, so they answer at once.

Work that started is never abandoned: its answer (or error) is the one the client gets, so a
deploy answered 503 was not done, and a deploy that was done is not answered 503.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import asynccontextmanager, contextmanager
from typing import TypeVar

import requests
from fastapi import HTTPException

from mlops_core.model_registry import mlflow_unreachable
from mlops_core.settings import Settings

logger = logging.getLogger(__name__)

T = TypeVar("T")


class RegistryUnavailable(HTTPException):
    """A 503 naming MLflow, with the seconds after which asking again makes sense."""

    def __init__(self, detail: str, retry_after: float) -> None:
        super().__init__(503, detail, headers={"Retry-After": str(max(1, round(retry_after)))})


class CircuitBreaker:
    """Closed, open after `failures` consecutive failures, then one probe after `reset_seconds`.

    Thread-safe: calls are admitted on the event loop and report their outcome from the pool.
    """

    def __init__(
        self,
        failures: int,
        reset_seconds: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._threshold = failures
        self._reset_seconds = reset_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._failures = 0
        self._opened_at: float | None = None
        self._probing = False
        self.last_error = ""

    def admit(self) -> bool | None:
        """None: refused (open). False: admitted while closed. True: admitted as the probe."""
        with self._lock:
            if self._opened_at is None:
                return False
            if self._probing or self._clock() - self._opened_at < self._reset_seconds:
                return None
            self._probing = True
            return True

    def is_open(self) -> bool:
        with self._lock:
            return self._opened_at is not None

    def retry_after(self) -> float:
        """Seconds until the next probe may go (0 when closed)."""
        with self._lock:
            if self._opened_at is None:
                return 0.0
            return max(0.0, self._opened_at + self._reset_seconds - self._clock())

    def succeeded(self) -> None:
        with self._lock:
            if self._opened_at is not None:
                logger.info("MLflow answers again: registry calls resume")
            self._failures = 0
            self._opened_at = None
            self._probing = False

    def failed(self, reason: str) -> None:
        with self._lock:
            self._failures += 1
            self.last_error = reason
            if self._probing or (self._opened_at is None and self._failures >= self._threshold):
                if self._opened_at is None:
                    logger.warning(
                        "MLflow unreachable %d times in a row (%s): model endpoints answer 503 "
                        "at once, trying it again every %g s",
                        self._failures,
                        reason,
                        self._reset_seconds,
                    )
                self._opened_at = self._clock()
            self._probing = False

    def release_probe(self) -> None:
        """The probe never ran (cancelled while queued): let the next call probe instead."""
        with self._lock:
            self._probing = False


class RegistryGate:
    """Runs request handlers' MLflow work on its own pool, bounded, behind a circuit breaker."""

    def __init__(self, settings: Settings) -> None:
        self._uri = settings.mlflow_tracking_uri
        self._timeout = settings.registry_timeout_seconds
        self._threads = settings.registry_threads
        self._pool = ThreadPoolExecutor(self._threads, thread_name_prefix="registry")
        self.breaker = CircuitBreaker(
            settings.registry_breaker_failures, settings.registry_breaker_reset_seconds
        )

    async def run(self, work: Callable[[], T]) -> T:
        """`work()` on a registry thread; RegistryUnavailable (503) when MLflow is known down,
        found unreachable, or no thread is free within REGISTRY_TIMEOUT_SECONDS."""
        probe = self.breaker.admit()
        if probe is None:
            raise self._open()
        future = self._pool.submit(self._job, work, probe)
        waiting = asyncio.wrap_future(future)
        try:
            return await asyncio.wait_for(asyncio.shield(waiting), self._timeout)
        except TimeoutError:
            if not self._withdraw(future, probe):
                return await waiting  # it runs: MLflow's own timeout bounds each of its calls
            raise RegistryUnavailable(
                f"MLflow work for this request did not start within {self._timeout} s: all "
                f"{self._threads} registry threads are busy (REGISTRY_THREADS)",
                self._timeout,
            ) from None
        except asyncio.CancelledError:
            self._withdraw(future, probe)  # the client left: do not start its work
            raise

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    def _withdraw(self, future: Future[T], probe: bool) -> bool:
        """Cancel work that has not started yet; whether it was cancelled."""
        cancelled = future.cancel()
        if cancelled and probe:
            self.breaker.release_probe()
        return cancelled

    def _job(self, work: Callable[[], T], probe: bool) -> T:
        """On a registry thread: refuse at once if the breaker opened while this call queued."""
        if not probe and self.breaker.is_open():
            raise self._open()
        try:
            result = work()
        except Exception as exc:
            if not mlflow_unreachable(exc):
                self.breaker.succeeded()  # MLflow answered (or was not the problem)
                raise
            reason = self._why(exc)
            self.breaker.failed(reason)
            raise RegistryUnavailable(
                f"MLflow at {self._uri} is unreachable: {reason}",
                self.breaker.retry_after() or 1,
            ) from None
        self.breaker.succeeded()
        return result

    def _open(self) -> RegistryUnavailable:
        wait = self.breaker.retry_after()
        return RegistryUnavailable(
            f"MLflow at {self._uri} is unreachable ({self.breaker.last_error}): not asked again "
            f"for {wait:.0f} s",
            wait,
        )

    def _why(self, exc: BaseException) -> str:
        """A short reason: the `requests` error behind MLflow's long wrapped message."""
        cause = exc if isinstance(exc, requests.RequestException) else exc.__cause__
        cause = cause or exc.__context__ or exc
        text = str(cause).lower()
        if isinstance(cause, requests.Timeout) or "timed out" in text:
            return f"no answer within {self._timeout} s"
        if "refused" in text:
            return "connection refused"
        if isinstance(cause, requests.exceptions.RetryError):
            return "it answered with a server error"
        return type(cause).__name__


@contextmanager
def mlflow_client_limits(timeout_seconds: int) -> Iterator[None]:
    """Bound each HTTP call of MLflow's client in this process, no retry, while inside.

    MLflow's defaults (120 s, 7 retries with backoff) hold a thread for minutes per call when
    MLflow is down. The client reads these only from the environment, at each call; the previous
    values come back on exit (an app started inside a test process leaves it as it was).
    """
    limits = {
        "MLFLOW_HTTP_REQUEST_TIMEOUT": str(timeout_seconds),
        "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0",
    }
    saved = {name: os.environ.get(name) for name in limits}
    os.environ.update(limits)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@asynccontextmanager
async def running_registry_gate(settings: Settings) -> AsyncIterator[RegistryGate]:
    """The app's RegistryGate, and MLflow's client limits, while the app runs."""
    gate = RegistryGate(settings)
    with mlflow_client_limits(settings.registry_timeout_seconds):
        try:
            yield gate
        finally:
            gate.close()
