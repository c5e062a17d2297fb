"""End to end: the real Celery worker runs a real notebook while a browser-like viewer and the
`mlops logs --follow` command watch it through the backend."""

from __future__ import annotations

import asyncio
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from mlops_core.database import session_scope
from mlops_core.log_archive import stored_log
from mlops_core.settings import Settings
from mlops_core.task_queue import RUN_PIPELINE_TASK, make_celery
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
        [
            str(VENV_BIN / "celery"),
            "-A",
            "worker.celery_app",
            "worker",
            "-Q",
            "pipelines",
            "--concurrency",
            "1",
            "--loglevel",
            "INFO",
        ],
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
    repo = make_repo(
        tmp_path / "repo",
        printing_notebook(f"logs-e2e-{uuid.uuid4().hex[:8]}", TICKS, TICK_INTERVAL),
    )
    pipeline_id = backend.new_pipeline(
        status="queued",
        repo_url=repo.url,
        branch=repo.branch,
        notebook_path=repo.notebook_path,
        commit_sha=repo.commit_sha,
    )
    cli = subprocess.Popen(
        [str(VENV_BIN / "mlops"), "logs", str(pipeline_id), "-f", "--api", backend.http_url],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )

    async def scenario():  # type: ignore[no-untyped-def]
        viewer = asyncio.create_task(watch(backend.log_socket(pipeline_id), limit_seconds=240))
        await asyncio.sleep(0.5)
        celery = make_celery(Settings(redis_url=backend.redis_url))
        celery.send_task(RUN_PIPELINE_TASK, args=[pipeline_id])
        return await viewer

    viewer = asyncio.run(scenario())
    cli_out, cli_err = cli.communicate(timeout=60)

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

    assert cli.returncode == 0, cli_err
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
