"""The worker's MLflow client: every call rides out an outage of up to MLFLOW_RETRY_SECONDS.

MLflow's own client retries a refused connection with exponential backoff for about four and a
half minutes (seven retries, factor 2) and waits 120 s for each answer, per call; a pipeline
making a few dozen calls while MLflow is down then sat `running` for many minutes. The worker
takes that budget over: MLflow's HTTP layer gets no retries and a shorter read timeout
(`configure_http`), and `PatientMlflow` retries each call that got no answer with backoff,
against one outage clock shared by all calls: it starts at the first failure and is reset by
any answer. Once the outage is MLFLOW_RETRY_SECONDS old, the failing call raises
`MlflowUnreachable` ("MLflow unreachable at <url> for 120 s"), and so does every later call
that still finds MLflow down, after one try. A cancel (or the attempt losing its pipeline)
ends the waiting at once.

Only calls that got no answer are retried (`mlflow_unreachable`): an answer that refuses the
call (unknown model, bad argument) is raised at once, as before.
"""

from __future__ import annotations

import functools
import inspect
import logging
import os
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion

from mlops_core.model_registry import mlflow_unreachable
from worker.phases.context import PhaseFailed, PipelineCancelled

logger = logging.getLogger(__name__)
T = TypeVar("T")
# A read timeout for each MLflow HTTP call, so a hung server counts against the retry budget
# instead of holding one call for MLflow's default 120 s. It bounds silence, not a transfer:
# a long artifact upload that keeps moving is not cut.
HTTP_TIMEOUT_SECONDS = 30
FIRST_DELAY_SECONDS = 0.5
MAX_DELAY_SECONDS = 8.0


class MlflowUnreachable(PhaseFailed):
    """MLflow gave no answer for MLFLOW_RETRY_SECONDS; the phase fails with this message."""


def configure_http() -> None:
    """Leave retrying to `PatientMlflow` (call once per worker process, before any MLflow call).

    An operator's own MLFLOW_HTTP_REQUEST_* values win.
    """
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", str(HTTP_TIMEOUT_SECONDS))


class PatientMlflow(MlflowClient):
    """An MlflowClient whose public calls are retried through an MLflow outage (module doc).

    Every public method of MlflowClient is wrapped below the class; `create_model_version`
    has its own retry, because it is the one call that is not safe to repeat blindly.
    """

    def __init__(self, tracking_uri: str, *, retry_seconds: float, stop: threading.Event) -> None:
        super().__init__(tracking_uri=tracking_uri, registry_uri=tracking_uri)
        self._uri = _shown(tracking_uri)
        self._retry_seconds = retry_seconds
        self._stop = stop
        self._down_since: float | None = None
        self._lock = threading.Lock()

    def retrying(self, call: Callable[[], T], what: str) -> T:
        """Run `call`, retrying it while MLflow gives no answer and the outage is young enough."""
        delay = FIRST_DELAY_SECONDS
        while True:
            try:
                result = call()
            except Exception as exc:
                if not mlflow_unreachable(exc):
                    raise
                waited = self._outage_age()
                if waited >= self._retry_seconds:
                    raise MlflowUnreachable(
                        f"MLflow unreachable at {self._uri} for {self._retry_seconds:g} s"
                    ) from exc
                if waited == 0:
                    logger.warning(
                        "MLflow unreachable at %s (%s: %s); retrying for up to %g s",
                        self._uri,
                        what,
                        exc,
                        self._retry_seconds,
                    )
                if self._stop.wait(min(delay, self._retry_seconds - waited)):
                    raise PipelineCancelled from exc
                delay = min(delay * 2, MAX_DELAY_SECONDS)
            else:
                with self._lock:
                    self._down_since = None
                return result

    def _outage_age(self) -> float:
        """Seconds since this outage began (0 for the failure that begins it)."""
        now = time.monotonic()
        with self._lock:
            if self._down_since is None:
                self._down_since = now
            return now - self._down_since

    def create_model_version(  # type: ignore[override]
        self, name: str, source: str, run_id: str | None = None, **kwargs: Any
    ) -> ModelVersion:
        """Create a version; before asking again after a lost answer, look for the one it made.

        A call whose answer was lost (reset, timeout, 5xx) may have created the version; a blind
        retry would create a second. One run makes at most one version, so a version of `name`
        with this `run_id` is the one the lost call made.
        """
        lost_answer = False

        def create_once() -> ModelVersion:
            nonlocal lost_answer
            if lost_answer and run_id:
                made = MlflowClient.search_model_versions(
                    self, f"name = '{name}' and run_id = '{run_id}'"
                )
                if made:
                    return min(made, key=lambda v: int(v.version))
            lost_answer = True
            version = MlflowClient.create_model_version(self, name, source, run_id, **kwargs)
            lost_answer = False
            return version

        return self.retrying(create_once, "create_model_version")


def _shown(uri: str) -> str:
    """The tracking URI as errors show it: without a user or password it may carry."""
    parts = urlsplit(uri)
    if parts.username is None and parts.password is None:
        return uri
    return urlunsplit(parts._replace(netloc=parts.netloc.rsplit("@", 1)[-1]))


def _patient(method: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(method)
    def call(self: PatientMlflow, *args: Any, **kwargs: Any) -> Any:
        return self.retrying(lambda: method(self, *args, **kwargs), method.__name__)

    return call


for _name, _method in inspect.getmembers(MlflowClient, inspect.isfunction):
    _plain = not isinstance(inspect.getattr_static(MlflowClient, _name), staticmethod | classmethod)
    if _plain and not _name.startswith("_") and _name not in PatientMlflow.__dict__:
        setattr(PatientMlflow, _name, _patient(_method))
