"""Fixtures for the live-log tests: a real backend process, pipeline rows, a publishing worker."""

from __future__ import annotations

import asyncio
import random
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import redis
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosedError

from mlops_cli.log_follow import events_of
from mlops_core.database import session_scope, upgrade_database
from mlops_core.launch_commands import BACKEND_APP, uvicorn_command
from mlops_core.log_events import LogPublisher
from mlops_core.schema import Pipeline
from tests.conftest import TEST_ENCRYPTION_KEY
from tests.support.processes import ManagedProcess, free_port, wait_http
from tests.support.services import RedisServer


@dataclass
class Backend:
    """A uvicorn process serving the backend, and what a test needs to talk to it."""

    http_url: str
    database_url: str
    redis_url: str
    process: ManagedProcess

    @property
    def ws_base(self) -> str:
        return self.http_url.replace("http://", "ws://", 1)

    def log_socket(self, pipeline_id: int, after: int | None = None) -> str:
        query = f"?after={after}" if after is not None else ""
        return f"{self.ws_base}/ws/pipelines/{pipeline_id}/logs{query}"

    def new_pipeline(self, status: str = "running", **columns: Any) -> int:
        """Insert a pipeline row with a random id, so Redis keys never collide between tests."""
        pipeline_id = random.randint(10**6, 2**31 - 1)
        fields = {
            "repo_url": "file:///tmp/repo",
            "branch": "main",
            "notebook_path": "notebooks/train.ipynb",
            **columns,
        }
        with session_scope(self.database_url) as session:
            session.add(Pipeline(id=pipeline_id, status=status, **fields))
        return pipeline_id

    def set_status(self, pipeline_id: int, status: str) -> None:
        with session_scope(self.database_url) as session:
            session.get(Pipeline, pipeline_id).status = status  # type: ignore[union-attr]


def start_backend(
    env: dict[str, str], database_url: str, log_dir: Path, **extra_env: str
) -> Backend:
    port = free_port()
    process = ManagedProcess(
        uvicorn_command(BACKEND_APP, port),
        env={**env, "DATABASE_URL": database_url, **extra_env},
        log_path=log_dir / f"backend-{port}.log",
        cwd=Path(__file__).resolve().parents[2],
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(f"{url}/docs", timeout=60, process=process)
    except BaseException:
        process.stop()  # a fixture that fails before its yield never tears down
        raise
    return Backend(url, database_url, env["REDIS_URL"], process)


@pytest.fixture(scope="package")
def package_env(tmp_path_factory: pytest.TempPathFactory, redis_url: str) -> dict[str, str]:
    """`base_env` for the package: starting a backend costs seconds, so the tests share them."""
    home = tmp_path_factory.mktemp("mlops-home")
    return {
        "MLOPS_HOME": str(home),
        "REDIS_URL": redis_url,
        "ALLOW_LOCAL_REPOS": "true",
        "ENCRYPTION_KEY": TEST_ENCRYPTION_KEY,
        "NO_PROXY": "127.0.0.1,localhost",
        "no_proxy": "127.0.0.1,localhost",
    }


@pytest.fixture(scope="package")
def backend(
    package_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Backend]:
    """The backend on the session's Redis, pinging idle viewers every half second.

    Tests share it safely: each uses pipelines of its own (random ids, so Redis keys differ).
    """
    workdir = tmp_path_factory.mktemp("logs-backend")
    database_url = f"sqlite:///{workdir / 'mlops.db'}"
    upgrade_database(database_url)
    server = start_backend(package_env, database_url, workdir, WS_PING_INTERVAL_SECONDS="0.5")
    yield server
    server.process.stop()


# The guarded backend's tokens: reads need READ_TOKEN (or ADMIN_TOKEN).
READ_TOKEN = "logs-read-token"
ADMIN_TOKEN = "logs-admin-token"


@pytest.fixture(scope="package")
def guarded_backend(
    package_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Backend]:
    """A backend with API_READ_TOKEN and API_TOKEN set, logging at uvicorn's default level."""
    workdir = tmp_path_factory.mktemp("guarded-backend")
    database_url = f"sqlite:///{workdir / 'mlops.db'}"
    upgrade_database(database_url)
    server = start_backend(
        package_env, database_url, workdir, API_READ_TOKEN=READ_TOKEN, API_TOKEN=ADMIN_TOKEN
    )
    yield server
    server.process.stop()


@pytest.fixture(scope="package")
def private_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A redis-server of the package's own, for tests that flush or restart it."""
    server = RedisServer(tmp_path_factory.mktemp("private-redis"))
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="package")
def durable_backend(
    package_env: dict[str, str],
    private_redis: RedisServer,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Backend]:
    """A backend on the private Redis (and the worker of the end-to-end test, too)."""
    workdir = tmp_path_factory.mktemp("durable-backend")
    database_url = f"sqlite:///{workdir / 'mlops.db'}"
    upgrade_database(database_url)
    server = start_backend({**package_env, "REDIS_URL": private_redis.url}, database_url, workdir)
    yield server
    server.process.stop()


@dataclass
class ViewerResult:
    """What one WebSocket viewer received before the server closed the connection."""

    events: list[dict[str, Any]] = field(default_factory=list)
    received_at: list[float] = field(default_factory=list)
    pings: int = 0
    messages: int = 0
    close_code: int | None = None
    close_reason: str | None = None
    subprotocol: str | None = None

    @property
    def seqs(self) -> list[int]:
        return [event["seq"] for event in self.events]

    @property
    def final(self) -> dict[str, Any]:
        return self.events[-1]


async def watch(url: str, *, limit_seconds: float = 60.0, **options: Any) -> ViewerResult:
    """Connect one viewer and collect every message until the server closes.

    `options` go to the client's `connect` (subprotocols, additional_headers).
    """
    result = ViewerResult()
    async with asyncio.timeout(limit_seconds):
        async with connect(url, **options) as ws:
            result.subprotocol = ws.subprotocol
            try:
                async for message in ws:
                    result.messages += 1
                    for event in events_of(message):
                        if event.get("stream") == "ping":
                            result.pings += 1
                        else:
                            result.events.append(event)
                            result.received_at.append(time.time())
            except ConnectionClosedError:
                pass
            result.close_code = ws.close_code
            result.close_reason = ws.close_reason
    return result


class PublishingWorker(threading.Thread):
    """Publishes numbered lines with the worker's LogPublisher from a thread, like a run would.

    `progress(n)` blocks until n lines have been published, so viewers can join mid-run.
    """

    def __init__(
        self,
        redis_url: str,
        pipeline_id: int,
        lines: int,
        *,
        interval: float = 0.002,
        final_status: str | None = "success",
        before_final: Callable[[], None] | None = None,
    ) -> None:
        super().__init__(daemon=True)
        self.client = redis.Redis.from_url(redis_url)
        self.publisher = LogPublisher(self.client, pipeline_id)
        self.pipeline_id = pipeline_id
        self.lines = lines
        self.interval = interval
        self.final_status = final_status
        self.before_final = before_final
        self.published = 0
        self._cond = threading.Condition()
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            for i in range(1, self.lines + 1):
                self.publisher.publish(f"line {i}", phase="execute", cell=i % 7, stream="stdout")
                with self._cond:
                    self.published = i
                    self._cond.notify_all()
                if self.interval:
                    threading.Event().wait(self.interval)
            if self.before_final is not None:
                self.before_final()
            if self.final_status is not None:
                self.publisher.publish(
                    f"pipeline {self.final_status}", stream="status", status=self.final_status
                )
        except BaseException as exc:
            self.error = exc
            raise
        finally:
            with self._cond:
                self.published = self.lines + 1
                self._cond.notify_all()

    def progress(self, lines: int, timeout: float = 30.0) -> None:
        with self._cond:
            assert self._cond.wait_for(lambda: self.published >= lines, timeout)

    async def wait_progress(self, lines: int) -> None:
        await asyncio.to_thread(self.progress, lines)


def expected_texts(lines: int) -> list[str]:
    return [f"line {i}" for i in range(1, lines + 1)]
