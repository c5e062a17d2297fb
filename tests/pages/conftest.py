"""Fixtures for the dashboard tests: Debian's Chromium through Playwright, and the whole stack.

The stack is the real thing on free loopback ports: the backend (uvicorn), a Celery worker and
a model server as subprocesses, on the session's Redis and MLflow. A git repository on disk
stands in for GitHub; webhook deliveries are signed exactly as GitHub signs them.
"""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import nbformat
import pytest
import redis
from playwright.sync_api import expect

from mlops_core.launch_commands import (
    BACKEND_APP,
    MODEL_SERVER_APP,
    uvicorn_command,
    worker_command,
)
from tests.support.processes import ManagedProcess, free_port, wait_http

REPO_ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO_ROOT / "test-artifacts" / "pages"
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
# Redis keys of pipelines are per id and ids restart at 1 in every fresh database: a Redis
# database of its own (flushed first) keeps an earlier test's pipeline #1 out of this one's log.
PAGES_REDIS_DB = 7
API_TOKEN = "pages-test-token"
# Playwright's 5 s default for `expect` is a page's few requests on an idle machine; CI machines
# run two test workers beside a loaded stack, where a page's answer took longer. A wait that
# ends earlier costs nothing, so every assertion gets three times the default.
expect.set_options(timeout=15_000)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """Keep each phase's report on the item, so fixtures can tell that the test failed."""
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    setattr(item, f"report_{report.when}", report)


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    """Debian's Chromium, headless (Playwright's own browser download is not possible here).

    Per module, not per session: Playwright's sync API keeps an event loop running in the main
    thread while it is started, and every later test on the same xdist worker that calls
    `asyncio.run` (log viewers, batching, replica failover) failed with "cannot be called from a
    running event loop". Module fixtures end before the worker moves to another module.
    """
    if not CHROMIUM.exists():
        pytest.skip("Debian's chromium is not installed (apt-get install -y chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def artifacts() -> Path:
    """Where screenshots go (gitignored `test-artifacts/`)."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS


def iris_notebook(model_name: str) -> nbformat.NotebookNode:
    """A notebook following the cell-tag contract: an iris classifier that logs accuracy.

    The split depends on the pipeline id, so each run (even of the same commit) scores a little
    differently and the model page's chart has something to show. A run may then score below
    the served one: `GATE_COMPARE = False` serves each passing run all the same.
    """

    def cell(source: str, *tags: str) -> nbformat.NotebookNode:
        return nbformat.v4.new_code_cell(source, metadata={"tags": list(tags)})

    notebook = nbformat.v4.new_notebook(
        metadata={
            "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
            "language_info": {"name": "python"},
        }
    )
    notebook.cells = [
        nbformat.v4.new_markdown_cell("# Iris classifier"),
        cell(
            f'MODEL_NAME = "{model_name}"\nVERSION = "1.0.0"\nGATE_COMPARE = False',
            "mlops:config",
        ),
        cell('MODEL_OUTPUT_PATH = "model.joblib"\nPIPELINE_ID = 0\nC = 0.05', "parameters"),
        cell(
            "from sklearn.datasets import load_iris\n"
            "X, y = load_iris(return_X_y=True, as_frame=True)\n"
            'print(f"loaded {len(X)} rows with features {list(X.columns)}")',
            "mlops:data",
        ),
        cell(
            "from sklearn.model_selection import train_test_split\n"
            "X_train, X_test, y_train, y_test = train_test_split(\n"
            "    X, y, test_size=0.3, random_state=int(PIPELINE_ID), stratify=y)\n"
            'print("split <train> & <test>")',
            "mlops:preprocessing",
        ),
        cell(
            "from sklearn.linear_model import LogisticRegression\n"
            "model = LogisticRegression(C=C, max_iter=500)\n"
            "for step in range(3):\n"
            '    print(f"training step {step + 1}/3")\n'
            "model.fit(X_train, y_train)",
            "mlops:training",
        ),
        cell("X.describe()"),  # untagged: exploration, never run
        cell(
            "import mlflow\n"
            "accuracy = float(model.score(X_test, y_test))\n"
            'mlflow.log_metric("accuracy", accuracy)\n'
            'print(f"accuracy={accuracy:.4f}")',
            "mlops:evaluation",
        ),
        cell("import joblib\njoblib.dump(model, MODEL_OUTPUT_PATH)", "mlops:export"),
    ]
    return notebook


@dataclass
class GitRemote:
    """A bare repository standing in for the GitHub repo, pushed to from a work tree."""

    bare: Path
    work: Path
    notebook_path: str = "notebooks/train.ipynb"
    head: str = ""

    @property
    def url(self) -> str:
        return self.bare.as_uri()

    def git(self, *args: str) -> str:
        return subprocess.run(
            ["git", "-C", str(self.work), *args], check=True, capture_output=True, text=True
        ).stdout.strip()

    def commit_notebook(self, notebook: nbformat.NotebookNode, message: str) -> str:
        path = self.work / self.notebook_path
        path.parent.mkdir(parents=True, exist_ok=True)
        nbformat.write(notebook, path)
        self.git("add", self.notebook_path)
        self.git("commit", "-q", "-m", message)
        self.git("push", "-q", "origin", "HEAD:main")
        self.head = self.git("rev-parse", "HEAD")
        return self.head


@pytest.fixture
def git_remote(tmp_path: Path) -> GitRemote:
    bare = tmp_path / "remote" / "iris.git"
    work = tmp_path / "work"
    subprocess.run(["git", "init", "-q", "--bare", "-b", "main", str(bare)], check=True)
    subprocess.run(["git", "init", "-q", "-b", "main", str(work)], check=True)
    remote = GitRemote(bare=bare, work=work)
    remote.git("config", "user.email", "octocat@example.com")
    remote.git("config", "user.name", "Octo Cat")
    remote.git("remote", "add", "origin", str(bare))
    return remote


@dataclass
class Stack:
    """The platform's processes for one test, and how to reach them."""

    env: dict[str, str]
    log_dir: Path
    backend_port: int = field(default_factory=free_port)
    model_server_port: int = field(default_factory=free_port)
    processes: dict[str, ManagedProcess] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.backend_port}"

    @property
    def model_server_url(self) -> str:
        return f"http://127.0.0.1:{self.model_server_port}"

    def _start(self, name: str, args: list[str]) -> ManagedProcess:
        process = ManagedProcess(
            args, env=self.env, log_path=self.log_dir / f"{name}.log", cwd=REPO_ROOT
        )
        self.processes[name] = process
        return process

    def start_backend(self) -> None:
        process = self._start(
            "backend",
            uvicorn_command(BACKEND_APP, self.backend_port),
        )
        wait_http(f"{self.url}/health", timeout=60, process=process)

    def restart_backend(self) -> None:
        """Stop the backend (dropping every WebSocket) and start it again on the same port."""
        self.processes.pop("backend").stop()
        self.start_backend()

    def start(self) -> None:
        model_server = self._start(
            "model-server",
            uvicorn_command(MODEL_SERVER_APP, self.model_server_port),
        )
        self._start(
            "worker",
            worker_command(node_name=f"pages-{uuid.uuid4().hex[:8]}@%h"),
        )
        self.start_backend()
        wait_http(f"{self.model_server_url}/ready", timeout=90, process=model_server)

    def stop(self) -> None:
        for process in reversed(list(self.processes.values())):
            process.stop()

    def logs(self) -> str:
        """The tail of every process's log, to explain a failure."""
        return "\n".join(
            f"--- {name} ---\n{process.log_text()[-3000:]}"
            for name, process in self.processes.items()
        )


@pytest.fixture
def stack_env(base_env: dict[str, str], database_url: str, tmp_path: Path) -> dict[str, str]:
    """Platform environment for one test, with API_TOKEN set so the pages must ask for it."""
    redis_url = base_env["REDIS_URL"].rsplit("/", 1)[0] + f"/{PAGES_REDIS_DB}"
    redis.Redis.from_url(redis_url).flushdb()
    return {
        **base_env,
        "REDIS_URL": redis_url,
        "DATABASE_URL": database_url,
        "API_TOKEN": API_TOKEN,
        "WORK_DIR": str(tmp_path / "work-dirs"),
    }


def _run_stack(
    stack: Stack, request: pytest.FixtureRequest, *, backend_only: bool
) -> Iterator[Stack]:
    try:
        if backend_only:
            stack.start_backend()
        else:
            stack.start()
        yield stack
        call = getattr(request.node, "report_call", None)
        if call is not None and call.failed:
            print(stack.logs())  # shown with the failure
    except BaseException:
        print(stack.logs())
        raise
    finally:
        stack.stop()


@pytest.fixture
def backend(
    stack_env: dict[str, str], tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[Stack]:
    """The backend alone (no worker, no model server): for pages fed straight from Redis."""
    stack = Stack(env=stack_env, log_dir=tmp_path / "logs")
    stack_env["PUBLIC_BASE_URL"] = stack.url
    yield from _run_stack(stack, request, backend_only=True)


@pytest.fixture
def stack(
    stack_env: dict[str, str], mlflow_uri: str, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[Stack]:
    """Backend + Celery worker + model server on the session's Redis and MLflow."""
    stack = Stack(env=stack_env, log_dir=tmp_path / "logs")
    stack_env.update(
        serving_env(stack, mlflow_uri)
        | {"AUTO_DEPLOY_ON_SUCCESS": "true", "MIN_ACCURACY_THRESHOLD": "0.5"}
        | {"WORKER_CONCURRENCY": "1"}
    )
    yield from _run_stack(stack, request, backend_only=False)


def serving_env(stack: Stack, mlflow_uri: str) -> dict[str, str]:
    """What a stack that serves models needs beside stack_env."""
    return {
        "MLFLOW_TRACKING_URI": mlflow_uri,
        "MODEL_SERVER_URL": stack.model_server_url,
        "PUBLIC_BASE_URL": stack.url,
        # Its own alias: the session's MLflow holds other tests' served models too.
        "SERVING_ALIAS": f"pages{uuid.uuid4().hex[:8]}",
        "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    }
