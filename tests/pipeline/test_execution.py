"""execute through the real worker and kernel: failures, secrets, cancel, cell timeout."""

from __future__ import annotations

import json
import time
from pathlib import Path

import redis
from mlflow import MlflowClient

from mlops_core.database import session_scope
from mlops_core.schema import Pipeline
from mlops_core.task_queue import CANCEL_CHANNEL
from tests.conftest import TEST_ENCRYPTION_KEY
from tests.pipeline.conftest import (
    WORKER_SECRETS,
    WorkerGroup,
    create_pipeline,
    kernel_process,
    log_events,
    redis_db_url,
    small_notebook,
    start_worker,
    unique_model_name,
    wait_finished,
    wait_log,
)
from tests.support.processes import wait_for


def run_small(group: WorkerGroup, make_repo, name: str, **cells: str) -> tuple[int, dict]:
    repo = make_repo()
    sha = repo.commit({"train.ipynb": small_notebook(name, **cells)})
    pipeline_id = create_pipeline(group.database_url, repo, commit_sha=sha)
    group.send(pipeline_id)
    return pipeline_id, wait_finished(group.database_url, pipeline_id)


def test_a_raising_cell_fails_execute_with_its_position_and_error_and_registers_nothing(
    shared_worker: WorkerGroup, make_repo
) -> None:
    name = unique_model_name("raising")
    pipeline_id, state = run_small(
        shared_worker, make_repo, name, training="raise ValueError('the data is bad')"
    )
    assert state["status"] == "failed"
    status, error = state["phases"]["execute"]
    assert status == "failed"
    assert error.startswith("cell 3 (mlops:training) raised ValueError: the data is bad"), error
    assert "raise ValueError('the data is bad')" in error  # the last lines of the traceback
    assert state["phases"]["register"][0] == "skipped"
    client = MlflowClient(shared_worker.mlflow_uri)
    assert client.get_run(state["mlflow_run_id"]).info.status == "FAILED"
    assert client.search_model_versions(f"name='{name}'") == []
    # The partly executed notebook is kept with the run for debugging.
    assert [a.path for a in client.list_artifacts(state["mlflow_run_id"], "notebook")] == [
        "notebook/executed.ipynb"
    ]
    errors = [e for e in log_events(shared_worker.redis_url, pipeline_id) if e.stream == "error"]
    assert any("ValueError: the data is bad" in e.text and e.cell == 2 for e in errors)
    # The user's line is logged once, in its cell's source; the outcome lines name the error
    # without repeating the traceback.
    raised = [e.text for e in errors if "raise ValueError" in e.text]
    assert raised == ["--> 3 | raise ValueError('the data is bad')"], raised
    # ... and kept with the pipeline, for its page.
    with session_scope(shared_worker.database_url) as session:
        failure = session.get(Pipeline, pipeline_id).failure
    assert failure["cell"] == 3 and failure["exception"] == "ValueError: the data is bad"
    [frame] = failure["frames"]
    assert (frame["cell"], frame["line"], frame["tag"]) == (3, 3, "mlops:training")
    assert {"number": 3, "text": "raise ValueError('the data is bad')"} in frame["source"]


def test_a_cell_that_kills_its_kernel_fails_execute_naming_the_cell(
    shared_worker: WorkerGroup, make_repo
) -> None:
    _, state = run_small(
        shared_worker,
        make_repo,
        unique_model_name("dead-kernel"),
        evaluation="import os, signal\nos.kill(os.getpid(), signal.SIGKILL)",
    )
    assert state["status"] == "failed"
    status, error = state["phases"]["execute"]
    assert status == "failed"
    assert error.startswith("the kernel died while running cell 4 (mlops:evaluation)"), error


def test_the_kernel_environment_holds_no_platform_secret(
    shared_worker: WorkerGroup, make_repo
) -> None:
    pipeline_id, state = run_small(
        shared_worker,
        make_repo,
        unique_model_name("env"),
        training="import json, os\nprint('ENV=' + json.dumps(dict(os.environ)))",
    )
    assert state["status"] == "success", state
    line = next(
        e.text
        for e in log_events(shared_worker.redis_url, pipeline_id)
        if e.text.startswith("ENV=")
    )
    env = json.loads(line.removeprefix("ENV="))
    secrets = [
        *WORKER_SECRETS.values(),
        TEST_ENCRYPTION_KEY,
        shared_worker.database_url,
        shared_worker.redis_url,
    ]
    assert not [s for s in secrets if s in line]
    assert not [k for k in env if any(w in k.upper() for w in ("TOKEN", "SECRET", "PASSWORD"))]
    # MLflow calls go to a store in the work folder, copied into the real run afterwards.
    assert env["MLFLOW_TRACKING_URI"].startswith("file://")
    assert f"/pipeline-{pipeline_id}/" in env["MLFLOW_TRACKING_URI"]
    assert env["MLFLOW_RUN_ID"] != state["mlflow_run_id"]
    assert shared_worker.mlflow_uri not in line
    assert env["PIPELINE_ID"] == str(pipeline_id)
    assert env["HOME"] != shared_worker.env["MLOPS_HOME"]


def test_cancel_while_a_cell_runs_kills_the_kernel_and_ends_cancelled(
    shared_worker: WorkerGroup, make_repo
) -> None:
    repo = make_repo()
    notebook = small_notebook(
        unique_model_name("cancel"),
        training="print('long cell started', flush=True)\nimport time\ntime.sleep(300)",
    )
    pipeline_id = create_pipeline(
        shared_worker.database_url, repo, commit_sha=repo.commit({"train.ipynb": notebook})
    )
    shared_worker.send(pipeline_id)
    wait_log(shared_worker.redis_url, pipeline_id, "long cell started")
    kernel = kernel_process(pipeline_id)

    # What POST /pipelines/{id}/cancel does for a running pipeline.
    asked = time.monotonic()
    with session_scope(shared_worker.database_url) as session:
        session.get(Pipeline, pipeline_id).cancel_requested = True
    client = redis.Redis.from_url(shared_worker.redis_url)
    client.publish(CANCEL_CHANNEL, str(pipeline_id))
    client.close()
    state = wait_finished(shared_worker.database_url, pipeline_id, timeout=30)
    took = time.monotonic() - asked

    assert state["status"] == "cancelled", state
    assert state["phases"]["execute"] == ("cancelled", "cancelled by request")
    assert state["phases"]["register"][0] == "skipped"
    assert took < 10, f"cancel took {took:.1f}s"
    wait_for(lambda: not kernel.is_running() or kernel.status() == "zombie", 10, what="kernel gone")
    run = MlflowClient(shared_worker.mlflow_uri).get_run(state["mlflow_run_id"])
    assert run.info.status == "KILLED"


def test_a_cell_running_past_its_timeout_fails_execute(
    tmp_path: Path, redis_url: str, mlflow_uri: str, make_repo, database_url: str
) -> None:
    group = start_worker(
        tmp_path,
        redis_url=redis_db_url(redis_url, 12),
        database_url=database_url,
        mlflow_uri=mlflow_uri,
        extra_env={"CELL_TIMEOUT_SECONDS": "4", "AUTO_DEPLOY_ON_SUCCESS": "false"},
        name="timeout",
    )
    try:
        repo = make_repo()
        notebook = small_notebook(
            unique_model_name("timeout"), preprocessing="import time\ntime.sleep(120)"
        )
        sha = repo.commit({"train.ipynb": notebook})
        pipeline_id = create_pipeline(database_url, repo, commit_sha=sha)
        group.send(pipeline_id)
        kernel = kernel_process(pipeline_id, timeout=60)
        state = wait_finished(database_url, pipeline_id, timeout=120)
    finally:
        group.stop()
    assert state["status"] == "failed", state
    status, error = state["phases"]["execute"]
    assert status == "failed"
    assert error.startswith(
        "cell 2 (mlops:preprocessing) timed out after 4 s (CELL_TIMEOUT_SECONDS)"
    ), error
    assert not kernel.is_running() or kernel.status() == "zombie"
