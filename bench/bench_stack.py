"""The real parts a log benchmark runs against: a private Redis, the backend, optionally a worker.

Everything listens on free loopback ports and lives in a temporary folder, so a benchmark
never touches a running stack (`make up`) or the machine's Redis.
"""

from __future__ import annotations

import random
import tempfile
from pathlib import Path
from types import TracebackType
from typing import Any

from cryptography.fernet import Fernet

from mlops_core.database import session_scope, upgrade_database
from mlops_core.launch_commands import BACKEND_APP, uvicorn_command, worker_command
from mlops_core.schema import Pipeline
from tests.support.processes import ManagedProcess, free_port, wait_for, wait_http
from tests.support.services import MlflowServer, RedisServer

REPO_ROOT = Path(__file__).resolve().parents[1]


class BenchStack:
    """Redis + backend (+ MLflow and a Celery worker with `with_worker`), stopped on exit."""

    def __init__(self, *, with_worker: bool = False, backend_env: dict[str, str] | None = None):
        self.with_worker = with_worker
        self._tmp = tempfile.TemporaryDirectory(prefix="mlops-bench-")
        self.workdir = Path(self._tmp.name)
        self.database_url = f"sqlite:///{self.workdir / 'mlops.db'}"
        self.redis = RedisServer(self.workdir / "redis")
        self.mlflow = MlflowServer(self.workdir / "mlflow") if with_worker else None
        self.processes: list[ManagedProcess] = []
        self.http_url = ""
        self._backend_env = backend_env or {}

    def __enter__(self) -> BenchStack:
        try:
            self._start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @property
    def redis_url(self) -> str:
        return self.redis.url

    def env(self) -> dict[str, str]:
        return {
            "MLOPS_HOME": str(self.workdir / "home"),
            "REDIS_URL": self.redis.url,
            "DATABASE_URL": self.database_url,
            "ENCRYPTION_KEY": Fernet.generate_key().decode(),
            "ALLOW_LOCAL_REPOS": "true",
            "AUTO_DEPLOY_ON_SUCCESS": "false",
            "NO_PROXY": "127.0.0.1,localhost",
            "no_proxy": "127.0.0.1,localhost",
            **({"MLFLOW_TRACKING_URI": self.mlflow.uri} if self.mlflow else {}),
        }

    def log_socket(self, pipeline_id: int) -> str:
        return f"{self.http_url.replace('http://', 'ws://')}/ws/pipelines/{pipeline_id}/logs"

    def new_pipeline(self, status: str = "running", **columns: Any) -> int:
        pipeline_id = random.randint(10**6, 2**31 - 1)
        fields = {
            "repo_url": "file:///bench",
            "branch": "main",
            "notebook_path": "notebooks/train.ipynb",
            **columns,
        }
        with session_scope(self.database_url) as session:
            session.add(Pipeline(id=pipeline_id, status=status, **fields))
        return pipeline_id

    def close(self) -> None:
        for process in reversed(self.processes):
            process.stop()
        self.processes.clear()
        if self.mlflow is not None:
            self.mlflow.stop()
        self.redis.stop()
        self._tmp.cleanup()

    def _start(self) -> None:
        self.redis.workdir.mkdir(parents=True)
        self.redis.start()
        upgrade_database(self.database_url)
        if self.mlflow is not None:
            self.mlflow.start()
        env = self.env()
        port = free_port()
        backend = self._spawn(
            "backend",
            uvicorn_command(BACKEND_APP, port, log_level="warning"),
            {**env, **self._backend_env},
        )
        self.http_url = f"http://127.0.0.1:{port}"
        wait_http(f"{self.http_url}/docs", timeout=120, process=backend)
        if self.with_worker:
            worker = self._spawn(
                "worker",
                worker_command(),
                env,
            )
            wait_for(lambda: "ready" in worker.log_text(), 120, 0.2, "celery worker ready")

    def _spawn(self, name: str, args: list[str], env: dict[str, str]) -> ManagedProcess:
        process = ManagedProcess(
            args, env=env, log_path=self.workdir / f"{name}.log", cwd=REPO_ROOT
        )
        self.processes.append(process)
        return process
