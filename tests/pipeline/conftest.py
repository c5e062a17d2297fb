"""Fixtures for pipeline tests: local git repos, pipeline rows, real Celery worker processes.

One worker (2 processes) serves most tests of this folder for the whole session; tests that
need other settings or kill their worker start their own on another Redis database number,
so no other worker of the test session can take their tasks.
"""

from __future__ import annotations

import itertools
import random
import re
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nbformat
import psutil
import pytest
import redis

from mlops_core.database import session_scope, upgrade_database
from mlops_core.log_events import LogEvent, history_key
from mlops_core.schema import Pipeline, Repo
from mlops_core.settings import Settings
from mlops_core.states import PipelineStatus
from mlops_core.task_queue import RUN_PIPELINE_TASK, make_celery
from tests.conftest import TEST_ENCRYPTION_KEY
from tests.pipeline.git_http_server import TlsCertificate
from tests.support.phases import phase_context
from tests.support.processes import ManagedProcess, wait_for
from worker.phases.context import PhaseContext

REPO_ROOT = Path(__file__).resolve().parents[2]
NOTEBOOKS = REPO_ROOT / "notebooks"
# Secrets placed in the worker's environment; none may reach a notebook.
WORKER_SECRETS = {
    "GITHUB_TOKEN": "ghp_worker_secret_token_0123456789",
    "GITHUB_WEBHOOK_SECRET": "webhook-secret-value-4242",
    "API_TOKEN": "api-token-value-7777",
    "SOME_SERVICE_PASSWORD": "hunter2-password-value",
}
_ids = itertools.count(random.randint(100_000, 900_000) * 10)


@dataclass
class WorkerGroup:
    """A Celery worker process plus what a test needs to talk to it."""

    process: ManagedProcess
    redis_url: str
    database_url: str
    mlflow_uri: str
    env: dict[str, str]

    def send(self, pipeline_id: int) -> None:
        send_task(self.redis_url, pipeline_id)

    def stop(self) -> None:
        self.process.stop()


def send_task(redis_url: str, pipeline_id: int) -> None:
    """Queue a pipeline exactly as the backend does."""
    app = make_celery(Settings(redis_url=redis_url))
    app.send_task(RUN_PIPELINE_TASK, args=[pipeline_id])
    app.close()


def redis_db_url(redis_url: str, db: int) -> str:
    return re.sub(r"/\d+$", f"/{db}", redis_url)


def start_worker(
    tmp: Path,
    *,
    redis_url: str,
    database_url: str,
    mlflow_uri: str,
    concurrency: int = 1,
    extra_env: dict[str, str] | None = None,
    name: str = "w",
) -> WorkerGroup:
    """Start `celery worker` as a real process with the platform's env (secrets included)."""
    home = tmp / f"home-{name}"
    home.mkdir(parents=True, exist_ok=True)
    env = {
        "MLOPS_HOME": str(home),
        "REDIS_URL": redis_url,
        "DATABASE_URL": database_url,
        "MLFLOW_TRACKING_URI": mlflow_uri,
        "ALLOW_LOCAL_REPOS": "true",
        "ENCRYPTION_KEY": TEST_ENCRYPTION_KEY,
        "NO_PROXY": "127.0.0.1,localhost",
        "no_proxy": "127.0.0.1,localhost",
        "WORKER_CONCURRENCY": str(concurrency),
        **WORKER_SECRETS,
        **(extra_env or {}),
    }
    process = ManagedProcess(
        [
            *("celery", "-A", "worker.celery_app", "worker", "--loglevel", "INFO"),
            *("--hostname", f"{name}-{uuid.uuid4().hex[:6]}@%h"),
            *("--without-gossip", "--without-mingle", "--without-heartbeat"),
        ],
        env=env,
        log_path=tmp / f"worker-{name}.log",
        cwd=home,
    )
    return WorkerGroup(process, redis_url, database_url, mlflow_uri, env)


@pytest.fixture(scope="session")
def tls_certificate(tmp_path_factory: pytest.TempPathFactory) -> TlsCertificate:
    """A self-signed certificate for the test git servers; the shared worker's git trusts it."""
    return TlsCertificate.create(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="session")
def shared_worker(
    tmp_path_factory: pytest.TempPathFactory,
    redis_url: str,
    mlflow_uri: str,
    tls_certificate: TlsCertificate,
) -> Iterator[WorkerGroup]:
    """The worker most pipeline tests share (two concurrent pipelines, Redis db 11)."""
    tmp = tmp_path_factory.mktemp("pipeline-worker")
    database_url = f"sqlite:///{tmp / 'mlops.db'}"
    upgrade_database(database_url)
    group = start_worker(
        tmp,
        redis_url=redis_db_url(redis_url, 11),
        database_url=database_url,
        mlflow_uri=mlflow_uri,
        concurrency=2,
        extra_env={
            "CELL_TIMEOUT_SECONDS": "120",
            "PIPELINE_TIMEOUT_SECONDS": "600",
            "AUTO_DEPLOY_ON_SUCCESS": "false",
            "GIT_SSL_CAINFO": str(tls_certificate.cert_path),
        },
        name="shared",
    )
    yield group
    group.stop()


class GitRepo:
    """A local repository standing in for GitHub (served to the worker over file://)."""

    def __init__(self, path: Path, branch: str = "main") -> None:
        self.path = path
        self.branch = branch
        path.mkdir(parents=True)
        self.git("init", "--quiet", "--initial-branch", branch)

    @property
    def url(self) -> str:
        return self.path.as_uri()

    def git(self, *args: str) -> str:
        return subprocess.run(
            ["git", "-C", str(self.path), *args],
            check=True,
            capture_output=True,
            text=True,
            env={"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.com"}
            | {"GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.com"}
            | {"PATH": "/usr/bin:/bin", "HOME": str(self.path)},
        ).stdout.strip()

    def commit(self, files: dict[str, bytes | str], message: str = "change") -> str:
        """Write files, commit them, return the new commit's sha."""
        for name, content in files.items():
            target = self.path / name
            target.parent.mkdir(parents=True, exist_ok=True)
            if isinstance(content, str):
                content = content.encode()
            target.write_bytes(content)
        self.git("add", "--all")
        self.git("commit", "--quiet", "-m", message)
        return self.git("rev-parse", "HEAD")


@pytest.fixture
def make_repo(tmp_path: Path):  # type: ignore[no-untyped-def]
    counter = itertools.count()

    def make() -> GitRepo:
        return GitRepo(tmp_path / f"repo-{next(counter)}")

    return make


def unique_model_name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def notebook_source(path: Path, model_name: str) -> str:
    """A shipped example notebook with its MODEL_NAME replaced (MLflow is shared by tests)."""
    notebook = nbformat.read(path, as_version=4)
    for cell in notebook.cells:
        if "mlops:config" in cell.metadata.get("tags", []):
            cell.source = re.sub(
                r'MODEL_NAME = "[^"]*"', f'MODEL_NAME = "{model_name}"', cell.source
            )
    return nbformat.writes(notebook)


def build_notebook(cells: list[tuple[tuple[str, ...], str]]) -> str:
    """A notebook from (tags, source) pairs; an empty tag tuple makes an untagged cell."""
    notebook = nbformat.v4.new_notebook()
    for tags, source in cells:
        cell = nbformat.v4.new_code_cell(source)
        if tags:
            cell.metadata["tags"] = list(tags)
        notebook.cells.append(cell)
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3"}
    return nbformat.writes(notebook)


def small_notebook(
    model_name: str, preprocessing: str = "", training: str = "", evaluation: str = ""
) -> str:
    """A fast notebook keeping the contract; the keyword arguments add code to those cells."""
    return build_notebook(
        [
            (("mlops:config",), f'MODEL_NAME = "{model_name}"\nVERSION = "0.1"\nC = 1.0'),
            (
                ("mlops:preprocessing",),
                "X = [[0.0, 1.0], [1.0, 0.0], [0.0, 0.9], [1.0, 0.1]]\ny = [0, 1, 0, 1]\n"
                + preprocessing,
            ),
            (
                ("mlops:training",),
                "from sklearn.linear_model import LogisticRegression\n"
                "model = LogisticRegression(C=C).fit(X, y)\n" + training,
            ),
            (
                ("mlops:evaluation",),
                "import mlflow\nmlflow.log_metric('accuracy', 1.0)\n" + evaluation,
            ),
            (("mlops:export",), "import joblib\njoblib.dump(model, MODEL_OUTPUT_PATH)"),
        ]
    )


@pytest.fixture
def make_phase_context(redis_url: str, tmp_path: Path) -> Iterator[Callable[..., PhaseContext]]:
    """`phase_context` for a pipeline id (a new one by default), logging to the session Redis."""
    client = redis.Redis.from_url(redis_url)

    def make(
        settings: Settings, *, phase: str, pipeline_id: int | None = None, **fields: Any
    ) -> PhaseContext:
        pipeline_id = next(_ids) if pipeline_id is None else pipeline_id
        work_dir = tmp_path / f"work-{pipeline_id}"
        return phase_context(settings, client, work_dir, pipeline_id, phase=phase, **fields)

    yield make
    client.close()


def create_pipeline(
    database_url: str,
    repo: GitRepo | None = None,
    *,
    repo_url: str | None = None,
    commit_sha: str | None = None,
    notebook_path: str = "train.ipynb",
    branch: str = "main",
    token_encrypted: str | None = None,
) -> int:
    """Insert a repo and a queued pipeline row, as the backend does on a push."""
    url = repo_url or (repo.url if repo else "")
    pipeline_id = next(_ids)
    with session_scope(database_url) as session:
        row = Repo(
            github_url=f"{url}#{pipeline_id}",
            branch=branch,
            notebook_path=notebook_path,
            token_encrypted=token_encrypted,
            webhook_secret_encrypted="unused",
        )
        session.add(row)
        session.flush()
        session.add(
            Pipeline(
                id=pipeline_id,
                repo_id=row.id,
                repo_url=url,
                branch=branch,
                notebook_path=notebook_path,
                commit_sha=commit_sha,
                status=PipelineStatus.QUEUED,
            )
        )
    return pipeline_id


def pipeline_state(database_url: str, pipeline_id: int) -> dict[str, Any]:
    """The pipeline row and its phases as plain data."""
    with session_scope(database_url) as session:
        p = session.get(Pipeline, pipeline_id)
        assert p is not None
        return {
            "status": p.status,
            "error": p.error,
            "attempts": p.attempts,
            "commit_sha": p.commit_sha,
            "metrics": dict(p.metrics or {}),
            "params": dict(p.params or {}),
            "model_name": p.model_name,
            "model_version": p.model_version,
            "mlflow_run_id": p.mlflow_run_id,
            "started_at": p.started_at,
            "finished_at": p.finished_at,
            "phases": {ph.name: (ph.status, ph.error) for ph in p.phases},
        }


def wait_finished(database_url: str, pipeline_id: int, timeout: float = 180) -> dict[str, Any]:
    def done() -> dict[str, Any] | None:
        state = pipeline_state(database_url, pipeline_id)
        return state if PipelineStatus(state["status"]).finished else None

    return wait_for(done, timeout, 0.25, f"pipeline {pipeline_id} to finish")


def log_events(redis_url: str, pipeline_id: int) -> list[LogEvent]:
    client = redis.Redis.from_url(redis_url)
    try:
        raw = client.lrange(history_key(pipeline_id), 0, -1)
    finally:
        client.close()
    return [LogEvent.model_validate_json(item) for item in raw]


def wait_log(redis_url: str, pipeline_id: int, text: str, timeout: float = 120) -> float:
    """Wait until a log line containing `text` was published; return when (monotonic)."""

    def seen() -> bool:
        return any(text in e.text for e in log_events(redis_url, pipeline_id))

    wait_for(seen, timeout, 0.1, f"log line {text!r}")
    return time.monotonic()


def kernel_process(pipeline_id: int, timeout: float = 30) -> psutil.Process:
    """The running kernel of a pipeline, seen from the host.

    A sandboxed kernel can write nothing outside its work folder (so no pid file for the test)
    and sees its own pid namespace; its working directory is in the pipeline's work folder.
    """
    marker = f"/pipeline-{pipeline_id}/"

    def find() -> psutil.Process | None:
        for proc in psutil.process_iter(["cmdline"]):
            try:
                if "ipykernel_launcher" in (proc.info["cmdline"] or []) and marker in (
                    proc.cwd() + "/"
                ):
                    return proc
            except psutil.Error:
                continue
        return None

    return wait_for(find, timeout, 0.2, f"kernel of pipeline {pipeline_id}")
