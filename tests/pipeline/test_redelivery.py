"""Idempotency on the pipeline id: a task delivered again ends with one result, one version."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import redis
from mlflow import MlflowClient

from mlops_core.database import session_scope
from mlops_core.schema import Pipeline, utcnow
from mlops_core.states import PipelineStatus
from tests.pipeline.conftest import (
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

# kombu's Redis transport: delivery tags handed to a worker and not yet acknowledged, by time.
UNACKED_INDEX = "unacked_index"


def expire_unacked_messages(redis_url: str) -> int:
    """Make kombu treat every unacked message as past its visibility timeout.

    A killed worker's message comes back once PIPELINE_TIMEOUT_SECONDS + 300 s have passed;
    rather than wait that long, the test ages the delivery timestamps kombu keeps, and the
    next worker restores the message through kombu's own code when it starts.
    """
    client = redis.Redis.from_url(redis_url)
    try:
        tags = client.zrange(UNACKED_INDEX, 0, -1)
        for tag in tags:
            client.zadd(UNACKED_INDEX, {tag: 1.0})
        return len(tags)
    finally:
        client.close()


def unacked_messages(redis_url: str) -> int:
    """Tasks kombu has handed to a worker and not yet seen acknowledged."""
    client = redis.Redis.from_url(redis_url)
    try:
        return int(client.zcard(UNACKED_INDEX))
    finally:
        client.close()


def test_a_worker_killed_mid_run_is_redelivered_and_ends_with_one_version(
    tmp_path: Path, redis_url: str, mlflow_uri: str, database_url: str, make_repo
) -> None:
    queue_url = redis_db_url(redis_url, 13)
    settings = {"redis_url": queue_url, "database_url": database_url, "mlflow_uri": mlflow_uri}
    env = {
        "AUTO_DEPLOY_ON_SUCCESS": "false",
        "PIPELINE_TIMEOUT_SECONDS": "120",
        # The redelivered task takes over once the dead attempt's heartbeat is 2 s old.
        "PIPELINE_RECOVERY_SECONDS": "4",
    }
    name = unique_model_name("redelivered")
    repo = make_repo()
    notebook = small_notebook(
        name, training="import time\nprint('training started', flush=True)\ntime.sleep(4)"
    )
    pipeline_id = create_pipeline(
        database_url, repo, commit_sha=repo.commit({"train.ipynb": notebook})
    )
    first = start_worker(tmp_path, **settings, extra_env=env, name="doomed")
    try:
        first.send(pipeline_id)
        wait_log(queue_url, pipeline_id, "training started")
        kernel = kernel_process(pipeline_id)
    finally:
        first.process.kill()  # kill -9 of the worker's whole process group, mid-cell
    # The notebook runner notices its worker is gone and takes the kernel down with it.
    wait_for(lambda: not kernel.is_running() or kernel.status() == "zombie", 10, what="kernel")
    assert current_status(database_url, pipeline_id) == PipelineStatus.RUNNING
    assert expire_unacked_messages(queue_url) == 1

    second = start_worker(tmp_path, **settings, extra_env=env, name="heir")
    try:
        state = wait_finished(database_url, pipeline_id, timeout=180)
    finally:
        second.stop()
    assert state["status"] == "success", state
    assert state["attempts"] == 2
    versions = MlflowClient(mlflow_uri).search_model_versions(f"name='{name}'")
    assert [v.version for v in versions] == ["1"]
    assert versions[0].run_id == state["mlflow_run_id"]
    texts = [e.text for e in log_events(queue_url, pipeline_id)]
    assert any(t.startswith("attempt 2 of 3:") for t in texts)
    # Each attempt had its own MLflow run: the killed one is marked KILLED, not left running.
    client = MlflowClient(mlflow_uri)
    experiment = client.get_run(state["mlflow_run_id"]).info.experiment_id
    runs = client.search_runs([experiment], f"tags.`mlops.pipeline_id` = '{pipeline_id}'")
    assert sorted(r.info.status for r in runs) == ["FINISHED", "KILLED"]


def current_status(database_url: str, pipeline_id: int) -> str:
    with session_scope(database_url) as session:
        return session.get(Pipeline, pipeline_id).status


def test_a_task_sent_again_after_registering_reuses_the_version(
    shared_worker: WorkerGroup, make_repo
) -> None:
    name = unique_model_name("adopted")
    repo = make_repo()
    sha = repo.commit({"train.ipynb": small_notebook(name)})
    pipeline_id = create_pipeline(shared_worker.database_url, repo, commit_sha=sha)
    shared_worker.send(pipeline_id)
    first = wait_finished(shared_worker.database_url, pipeline_id)
    assert first["status"] == "success", first
    # The first task is over, acknowledged: its heartbeat thread can no longer refresh the row
    # set running below (a real redelivery always comes with a new attempt number; this test
    # reuses the old one, so a late beat of the first attempt would look like a live holder).
    wait_for(lambda: unacked_messages(shared_worker.redis_url) == 0, 30, what="task acked")

    # As if the worker died long ago, after registering but before recording the outcome.
    with session_scope(shared_worker.database_url) as session:
        pipeline = session.get(Pipeline, pipeline_id)
        pipeline.status = PipelineStatus.RUNNING
        pipeline.heartbeat_at = utcnow() - timedelta(hours=1)
    shared_worker.send(pipeline_id)
    wait_log(shared_worker.redis_url, pipeline_id, "already registered by an earlier attempt")
    second = wait_finished(shared_worker.database_url, pipeline_id)

    assert second["status"] == "success", second
    assert second["attempts"] == 2
    assert second["model_version"] == first["model_version"] == "1"
    assert second["mlflow_run_id"] == first["mlflow_run_id"]
    assert second["metrics"] == first["metrics"]
    assert len(MlflowClient(shared_worker.mlflow_uri).search_model_versions(f"name='{name}'")) == 1
