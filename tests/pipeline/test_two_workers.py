"""Two workers as on two hosts: nothing shared but Redis, the database and MLflow.

Each has its own MLOPS_HOME and work folder; they take pipelines from the one queue at the
same time, and no pipeline runs twice (the claim on the pipeline row, mlops_core/pipeline_lease.py).
"""

from __future__ import annotations

from itertools import combinations
from pathlib import Path

import pytest
import redis
from celery import Celery
from mlflow import MlflowClient

from tests.pipeline.conftest import (
    GitRepo,
    WorkerGroup,
    create_pipeline,
    redis_db_url,
    send_task,
    small_notebook,
    start_worker,
    unique_model_name,
    wait_finished,
)
from tests.support.processes import wait_for

PIPELINES = 4
HOSTS = ("host-a", "host-b")


def start_host(
    tmp_path: Path, name: str, queue_url: str, database_url: str, mlflow_uri: str
) -> WorkerGroup:
    """A worker in a folder of its own, keeping its pipelines' work folders to show who ran what."""
    root = tmp_path / name
    return start_worker(
        root,
        redis_url=queue_url,
        database_url=database_url,
        mlflow_uri=mlflow_uri,
        extra_env={
            "WORK_DIR": str(root / "work"),
            "KEEP_WORK_DIRS": "true",
            "AUTO_DEPLOY_ON_SUCCESS": "false",
            "PIPELINE_TIMEOUT_SECONDS": "600",
        },
        name=name,
    )


def both_answer(queue_url: str, workers: list[WorkerGroup]) -> bool:
    """Both workers consume the queue (a task sent earlier could go to the first one up)."""
    app = Celery(broker=queue_url)
    try:
        replies = app.control.ping(timeout=1.0)
    finally:
        app.close()
    return len(replies) == len(workers)


@pytest.mark.postgres
@pytest.mark.parametrize("any_database_url", ["postgresql"], indirect=True)
@pytest.mark.timeout(900)
def test_two_workers_on_separate_hosts_share_the_queue_and_run_each_pipeline_once(
    tmp_path: Path, redis_url: str, mlflow_uri: str, any_database_url: str, make_repo
) -> None:
    database_url = any_database_url
    queue_url = redis_db_url(redis_url, 7)
    with redis.Redis.from_url(queue_url) as broker:
        broker.flushdb()  # no message of an earlier run
    workers = [start_host(tmp_path, name, queue_url, database_url, mlflow_uri) for name in HOSTS]
    try:
        wait_for(lambda: both_answer(queue_url, workers), 120, 0.5, "both workers to answer")
        runs: dict[int, str] = {}
        for n in range(PIPELINES):
            name = unique_model_name(f"two-hosts-{n}")
            repo: GitRepo = make_repo()
            # A few seconds of training, so that each worker is busy while the other takes one.
            notebook = small_notebook(name, training="import time\ntime.sleep(3)")
            commit = repo.commit({"train.ipynb": notebook})
            runs[create_pipeline(database_url, repo, commit_sha=commit)] = name
        for pipeline_id in runs:
            send_task(queue_url, pipeline_id)
        states = {pid: wait_finished(database_url, pid, timeout=600) for pid in runs}
    finally:
        for worker in workers:
            worker.stop()

    for pipeline_id, state in states.items():
        assert state["status"] == "success", (pipeline_id, state)
        assert state["attempts"] == 1, (pipeline_id, state)
    # Each pipeline ran on exactly one host, and each host ran at least one.
    ran_on = {
        pipeline_id: [
            host
            for host in HOSTS
            if (tmp_path / host / "work" / f"pipeline-{pipeline_id}").is_dir()
        ]
        for pipeline_id in runs
    }
    assert all(len(hosts) == 1 for hosts in ran_on.values()), ran_on
    assert {hosts[0] for hosts in ran_on.values()} == set(HOSTS), ran_on
    # In parallel: a pipeline of one host ran while one of the other host did.
    assert any(
        ran_on[a] != ran_on[b]
        and states[a]["started_at"] < states[b]["finished_at"]
        and states[b]["started_at"] < states[a]["finished_at"]
        for a, b in combinations(runs, 2)
    ), states
    # One MLflow run and one model version per pipeline: nothing was executed twice.
    client = MlflowClient(mlflow_uri)
    for pipeline_id, name in runs.items():
        experiment = client.get_experiment_by_name(name)
        assert experiment is not None, name
        pipeline_runs = client.search_runs(
            [experiment.experiment_id], f"tags.`mlops.pipeline_id` = '{pipeline_id}'"
        )
        assert [run.info.run_id for run in pipeline_runs] == [states[pipeline_id]["mlflow_run_id"]]
        versions = client.search_model_versions(f"name='{name}'")
        assert [v.version for v in versions] == ["1"], name
