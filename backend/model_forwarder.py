"""Predictions forwarded to the model-server replicas: spread over them, retried on another.

MODEL_SERVER_URL lists the replicas. Each prediction goes to the next replica in turn; when that
one cannot be reached (refused, reset, closed before answering, no connection within
CONNECT_TIMEOUT_SECONDS) or answers 503 (its first registry sync is not done, or its model
process is restarting), the prediction is sent once more, to the next replica. Predictions are
idempotent, so sending again a request that a replica killed mid-request may have received is
safe. A replica found unreachable is tried last for REST_SECONDS, so that while one is down each
request does not first pay a failed attempt. With a single replica the retry goes to it again:
that covers a keep-alive connection it closed just as the request went out.

The wait for an answer (MODEL_SERVER_TIMEOUT_SECONDS) is spent on the event loop, not on a
thread, so pending predictions cannot hold up webhook intake or any other request.
"""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager

import httpx
from fastapi import HTTPException

from mlops_core.settings import Settings

logger = logging.getLogger(__name__)

# A replica on the same network accepts a connection in milliseconds; longer means it is gone.
CONNECT_TIMEOUT_SECONDS = 2.0
REST_SECONDS = 2.0
# No answer came, and the replica may never have seen the request: worth another replica.
UNREACHABLE = (
    httpx.ConnectError,
    httpx.ConnectTimeout,
    httpx.ReadError,
    httpx.WriteError,
    httpx.RemoteProtocolError,
)


class ModelServerUnavailable(HTTPException):
    """No replica could be reached (503)."""

    def __init__(self, detail: str) -> None:
        super().__init__(503, detail)


class ModelServerTimeout(HTTPException):
    """A replica took the request but did not answer in time (504; not retried)."""

    def __init__(self, detail: str) -> None:
        super().__init__(504, detail)


class ModelForwarder:
    """Round robin over the replicas, one retry on the next, unreachable ones tried last."""

    def __init__(
        self,
        urls: list[str],
        client: httpx.AsyncClient,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.urls = urls
        self._client = client
        self._clock = clock
        self._turn = itertools.count()
        self._resting_until: dict[str, float] = {}

    def _targets(self) -> list[str]:
        """This request's first replica and the one it retries on."""
        start = next(self._turn) % len(self.urls)
        ring = self.urls[start:] + self.urls[:start]
        now = self._clock()
        ring.sort(key=lambda url: self._resting_until.get(url, 0.0) > now)  # stable
        return [ring[0], ring[1 % len(ring)]]

    def _rest(self, url: str, exc: Exception) -> None:
        now = self._clock()
        if self._resting_until.get(url, 0.0) <= now:
            logger.warning(
                "model server %s unreachable (%s): other replicas first for %g s",
                url,
                _describe(exc),
                REST_SECONDS,
            )
        self._resting_until[url] = now + REST_SECONDS

    async def post(self, path: str, body: bytes, headers: Mapping[str, str]) -> httpx.Response:
        """POST `body` to `path` on a replica; the answer of the first that gives one."""
        answer: httpx.Response | None = None
        failures: list[str] = []
        for url in self._targets():
            try:
                response = await self._client.post(url + path, content=body, headers=headers)
            except UNREACHABLE as exc:
                self._rest(url, exc)
                failures.append(f"{url}: {_describe(exc)}")
                continue
            except httpx.TimeoutException:
                raise ModelServerTimeout(
                    f"model server at {url} did not answer within the backend's "
                    f"MODEL_SERVER_TIMEOUT_SECONDS"
                ) from None
            if response.status_code != 503:
                return response
            answer = response
        if answer is not None:
            return answer  # a replica's own 503 says why better than a connection error
        raise ModelServerUnavailable(f"model server unreachable: {'; '.join(failures)}")


def _describe(exc: Exception) -> str:
    return str(exc) or type(exc).__name__


@asynccontextmanager
async def running_model_forwarder(settings: Settings) -> AsyncIterator[ModelForwarder]:
    """One pooled HTTP client to the replicas for the app's lifetime."""
    timeout = httpx.Timeout(settings.model_server_timeout_seconds, connect=CONNECT_TIMEOUT_SECONDS)
    async with httpx.AsyncClient(timeout=timeout) as client:
        yield ModelForwarder(settings.model_server_urls, client)
