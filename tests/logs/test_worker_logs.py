"""End to end: a repo registered and triggered through the API and the `mlops` command; the real
Celery worker runs its notebook while a WebSocket viewer and `mlops logs --follow` watch."""

from __future__ import annotations

import asyncio
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from mlops_core.database import session_scope
from mlops_core.launch_commands import worker_command
from mlops_core.log_archive import stored_log
from tests.logs.conftest import Backend, watch
from tests.logs.notebook_repo import make_repo, printing_notebook
from tests.support.processes import VENV_BIN, ManagedProcess, wait_for

TICKS = 15
TICK_INTERVAL = 0.2


@pytest.fixture
def worker(
    durable_backend: Backend, package_env: dict[str, str], mlflow_uri: str, tmp_path: Path
) -> Iterator[ManagedProcess]:
    process = ManagedProcess(
        worker_command(),
        env={
            **package_env,
            "REDIS_URL": durable_backend.redis_url,
            "DATABASE_URL": durable_backend.database_url,
            "MLFLOW_TRACKING_URI": mlflow_uri,
            "AUTO_DEPLOY_ON_SUCCESS": "false",
        },
        log_path=tmp_path / "worker.log",
        cwd=Path(__file__).resolve().parents[2],
    )
    wait_for(lambda: "ready" in process.log_text(), 60, 0.2, "celery worker ready")
    yield process
    process.stop()


def test_a_real_run_streams_cell_output_live_to_viewers_and_the_cli(
    durable_backend: Backend, worker: ManagedProcess, tmp_path: Path
) -> None:
    backend = durable_backend
    model_name = f"logs-e2e-{uuid.uuid4().hex[:8]}"
    repo = make_repo(tmp_path / "repo", printing_notebook(model_name, TICKS, TICK_INTERVAL))
    registered = httpx.post(
        f"{backend.http_url}/repos",
        json={"github_url": repo.url, "branch": repo.branch, "notebook_path": repo.notebook_path},
    )
    assert registered.status_code == 201, registered.text
    repo_id = registered.json()["id"]

    trigger = _mlops("trigger", str(repo_id), api=backend.http_url)
    assert trigger.returncode == 0, trigger.stderr
    pipeline_id = int(trigger.stdout.split()[1])  # "pipeline <id> queued"
    follower = subprocess.Popen(
        [str(VENV_BIN / "mlops"), "logs", str(pipeline_id), "-f", "--api", backend.http_url],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    viewer = asyncio.run(watch(backend.log_socket(pipeline_id), limit_seconds=240))
    cli_out, cli_err = follower.communicate(timeout=60)

    assert viewer.final["status"] == "success", worker.log_text()[-3000:]
    assert viewer.seqs == list(range(1, len(viewer.events) + 1))
    texts = [event["text"] for event in viewer.events]
    ticks = [i for i, text in enumerate(texts) if text.startswith("TICK ")]
    assert [texts[i].split()[1] for i in ticks] == [str(n) for n in range(TICKS)]
    assert all(viewer.events[i]["stream"] == "stdout" for i in ticks)
    assert any(text.startswith("phase execute") for text in texts)
    # Output arrived while the cell ran: the first tick reached the viewer before the last
    # one was even printed (the cell prints one every TICK_INTERVAL seconds).
    last_printed = float(texts[ticks[-1]].split()[2])
    assert viewer.received_at[ticks[0]] < last_printed - TICK_INTERVAL

    assert follower.returncode == 0, cli_err
    assert [line for line in cli_out.splitlines() if line.startswith("TICK ")] == [
        texts[i] for i in ticks
    ]
    assert cli_out.splitlines()[-1] == "[mlops] pipeline success"

    # The worker archived the whole log when the pipeline ended.
    with session_scope(backend.database_url) as session:
        assert [line.seq for line in stored_log(session, pipeline_id, limit=10_000)] == (
            viewer.seqs
        )
    page = httpx.get(f"{backend.http_url}/pipelines/{pipeline_id}/logs").json()
    assert page["status"] == "success"
    assert [line["text"] for line in page["lines"]] == texts

    listed = _mlops("pipelines", "--repo-id", str(repo_id), api=backend.http_url)
    assert listed.returncode == 0, listed.stderr
    row = listed.stdout.splitlines()[1].split()
    assert row[:3] == [str(pipeline_id), "success", "manual"]
    assert row[4] == f"{model_name}:1"

    # The worker's log is for people: no start banner, no MLflow run links, and MLflow's INFO
    # notes not relabelled WARNING by Celery's capture of stray output (service_logging.py).
    log = worker.log_text()
    assert "[tasks]" not in log and "View run" not in log
    assert [line for line in log.splitlines() if "WARNING/" in line and " INFO " in line] == []
    assert "Task mlops.run_pipeline" in log and "succeeded" in log


def _mlops(*args: str, api: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(VENV_BIN / "mlops"), *args, "--api", api],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
