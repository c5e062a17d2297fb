"""Every pipeline reaches an end: a worker killed mid-run, Redis and MLflow stopped (issue 10).

The tests start what they break (their own Celery workers and backend, Redis, MLflow) and run
with short PIPELINE_RECOVERY_SECONDS and MLFLOW_RETRY_SECONDS, so each fault is over in seconds.
"""

from __future__ import annotations

import os
import signal
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import redis
from mlflow import MlflowClient
from sqlalchemy import select

from backend.pipeline_queue import PipelineQueue
from backend.pipeline_watch import PipelineWatch
from mlops_core.database import session_scope
from mlops_core.launch_commands import BACKEND_APP, uvicorn_command
from mlops_core.log_archive import stored_log
from mlops_core.log_events import LogPublisher
from mlops_core.pipeline_lease import LostPipeline, end_margin, heartbeat_interval
from mlops_core.schema import Pipeline, PipelinePhase, utcnow
from mlops_core.settings import Settings
from mlops_core.states import PHASE_ORDER, Phase, PhaseStatus, PipelineStatus
from mlops_core.task_queue import PIPELINE_QUEUE, waiting_pipeline_ids
from tests.conftest import TEST_ENCRYPTION_KEY
from tests.pipeline.conftest import (
    REPO_ROOT,
    GitRepo,
    WorkerGroup,
    create_pipeline,
    kernel_process,
    log_events,
    pipeline_state,
    redis_db_url,
    send_task,
    small_notebook,
    start_worker,
    unique_model_name,
    wait_finished,
    wait_log,
)
from tests.serving.conftest import ModelServer
from tests.support.phases import phase_context
from tests.support.processes import ManagedProcess, free_port, wait_for, wait_http
from tests.support.services import MlflowServer, RedisServer
from worker import pipeline_runner
from worker.mlflow_retry import MlflowUnreachable, PatientMlflow
from worker.phases.context import PhaseContext, PipelineCancelled
from worker.pipeline_runner import Step
from worker.run_lock import Claim, RunLock, claim

# A dead worker's heartbeat is stale after 2 s; the backend looks every 0.5 s.
RECOVERY_ENV = {
    "PIPELINE_RECOVERY_SECONDS": "4",
    "PIPELINE_TIMEOUT_SECONDS": "120",
    "AUTO_DEPLOY_ON_SUCCESS": "false",
}
SLOW_TRAINING = "import time\nprint('training started', flush=True)\ntime.sleep({seconds})"


def dead_url() -> str:
    return f"http://127.0.0.1:{free_port()}"


def start_backend(
    tmp_path: Path, *, redis_url: str, database_url: str, env: dict[str, str]
) -> ManagedProcess:
    """The backend as deployed (uvicorn), whose background loop watches the pipelines."""
    port = free_port()
    home = tmp_path / "backend-home"
    home.mkdir(exist_ok=True)
    process = ManagedProcess(
        uvicorn_command(BACKEND_APP, port, log_level="warning"),
        env={
            "MLOPS_HOME": str(home),
            "REDIS_URL": redis_url,
            "DATABASE_URL": database_url,
            "MLFLOW_TRACKING_URI": dead_url(),
            "MODEL_SERVER_URL": dead_url(),
            "ENCRYPTION_KEY": TEST_ENCRYPTION_KEY,
            "ALLOW_LOCAL_REPOS": "true",
            "REQUEUE_INTERVAL_SECONDS": "0.5",
            "NO_PROXY": "127.0.0.1,localhost",
            "no_proxy": "127.0.0.1,localhost",
            **env,
        },
        log_path=tmp_path / "backend.log",
        cwd=REPO_ROOT,
    )
    wait_http(f"http://127.0.0.1:{port}/health", 60, process)
    return process


def flushed(redis_url: str) -> str:
    """The URL of a Redis database emptied for this test (no message of an earlier run)."""
    client = redis.Redis.from_url(redis_url)
    client.flushdb()
    client.close()
    return redis_url


def worker_running(pipeline_id: int, workers: list[WorkerGroup]) -> WorkerGroup:
    """The worker whose process tree runs the pipeline's kernel."""
    ancestors = {parent.pid for parent in kernel_process(pipeline_id).parents()}
    return next(w for w in workers if w.process.pid in ancestors)


def kill_main_process(worker: WorkerGroup) -> float:
    """`kill -9` of the Celery worker's main process only; returns when (monotonic)."""
    os.kill(worker.process.pid, signal.SIGKILL)
    return time.monotonic()


def count_lines(redis_url: str, pipeline_id: int, text: str) -> int:
    return sum(text in event.text for event in log_events(redis_url, pipeline_id))


@dataclass
class RecoveryStack:
    """A backend and two idle workers on a Redis database of their own."""

    tmp_path: Path
    queue_url: str
    database_url: str
    mlflow_uri: str
    workers: list[WorkerGroup] = field(default_factory=list)
    processes: list[ManagedProcess] = field(default_factory=list)

    def start(self, env: dict[str, str]) -> None:
        """Start the backend and the workers, all with `env`."""
        self.processes.append(
            start_backend(
                self.tmp_path, redis_url=self.queue_url, database_url=self.database_url, env=env
            )
        )
        for name in ("blue", "green"):
            self.workers.append(
                start_worker(
                    self.tmp_path,
                    redis_url=self.queue_url,
                    database_url=self.database_url,
                    mlflow_uri=self.mlflow_uri,
                    extra_env=env,
                    name=name,
                )
            )

    def stop(self) -> None:
        for worker in self.workers:
            worker.process.kill()  # SIGKILL of the group: whatever a dead main process left
        for process in self.processes:
            process.stop()


@pytest.fixture
def recovery_stack(
    tmp_path: Path, redis_url: str, mlflow_uri: str, database_url: str
) -> Iterator[RecoveryStack]:
    stack = RecoveryStack(tmp_path, flushed(redis_db_url(redis_url, 14)), database_url, mlflow_uri)
    yield stack
    stack.stop()


def test_a_worker_killed_mid_execute_is_queued_again_and_the_pipeline_succeeds(
    recovery_stack: RecoveryStack, database_url: str, mlflow_uri: str, make_repo
) -> None:
    queue_url, workers = recovery_stack.queue_url, recovery_stack.workers
    recovery_stack.start(RECOVERY_ENV)
    name = unique_model_name("recovered")
    repo: GitRepo = make_repo()
    notebook = small_notebook(name, training=SLOW_TRAINING.format(seconds=4))
    # Queued as by a webhook whose send failed: the backend's re-queue loop sends it.
    pipeline_id = create_pipeline(
        database_url, repo, commit_sha=repo.commit({"train.ipynb": notebook})
    )
    wait_log(queue_url, pipeline_id, "training started")
    killed_at = kill_main_process(worker_running(pipeline_id, workers))

    state = wait_finished(database_url, pipeline_id, timeout=180)
    took = time.monotonic() - killed_at
    print(f"kill -9 mid-execute -> success on attempt {state['attempts']} in {took:.1f} s")
    assert state["status"] == "success", state
    assert state["attempts"] == 2
    assert took < 180
    versions = MlflowClient(mlflow_uri).search_model_versions(f"name='{name}'")
    assert [v.version for v in versions] == ["1"]
    texts = [event.text for event in log_events(queue_url, pipeline_id)]
    assert "worker lost during execute (attempt 1 of 3); queued again" in texts


def test_a_pipeline_whose_worker_dies_on_every_attempt_fails_naming_phase_and_attempts(
    recovery_stack: RecoveryStack, database_url: str, mlflow_uri: str, make_repo
) -> None:
    queue_url, workers = recovery_stack.queue_url, recovery_stack.workers
    recovery_stack.start({**RECOVERY_ENV, "MAX_PIPELINE_ATTEMPTS": "2"})
    name = unique_model_name("doomed")
    repo: GitRepo = make_repo()
    notebook = small_notebook(name, training=SLOW_TRAINING.format(seconds=120))
    pipeline_id = create_pipeline(
        database_url, repo, commit_sha=repo.commit({"train.ipynb": notebook})
    )
    wait_log(queue_url, pipeline_id, "training started")
    kill_main_process(worker_running(pipeline_id, workers))
    wait_for(
        lambda: count_lines(queue_url, pipeline_id, "training started") == 2,
        120,
        0.1,
        "the second attempt's training",
    )
    killed_at = kill_main_process(worker_running(pipeline_id, workers))

    state = wait_finished(database_url, pipeline_id, timeout=60)
    took = time.monotonic() - killed_at
    print(f"second kill -> failed in {took:.1f} s")
    assert state["status"] == "failed", state
    assert state["error"] == "worker lost during execute (attempt 2 of 2)"
    assert state["attempts"] == 2
    assert state["phases"]["execute"] == ("failed", "worker lost (attempt 2)")
    assert state["phases"]["register"] == ("skipped", None)
    assert state["finished_at"] is not None
    assert MlflowClient(mlflow_uri).search_model_versions(f"name='{name}'") == []
    texts = [event.text for event in log_events(queue_url, pipeline_id)]
    assert "worker lost during execute (attempt 1 of 2); queued again" in texts
    assert texts[-2:] == ["worker lost during execute (attempt 2 of 2)", "pipeline failed"]


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A Redis of this test's own, to stop without disturbing other tests."""
    server = RedisServer(tmp_path / "redis")
    server.workdir.mkdir()
    server.start()
    yield server
    server.stop()


def phase_status(database_url: str, pipeline_id: int, phase: Phase) -> str | None:
    with session_scope(database_url) as session:
        return session.scalar(
            select(PipelinePhase.status).where(
                PipelinePhase.pipeline_id == pipeline_id, PipelinePhase.name == phase.value
            )
        )


def test_with_redis_stopped_during_deploy_the_pipeline_ends_and_its_status_is_in_the_db(
    tmp_path: Path, own_redis: RedisServer, mlflow_uri: str, database_url: str, make_repo
) -> None:
    """Redis dies while the version registers and never comes back: the alias still moves,
    the replica loads the version from the registry, deploy learns it over HTTP, and the end
    state lands in the database (the log archive waits for Redis)."""
    alias = f"prod{uuid.uuid4().hex[:8]}"
    server = ModelServer(
        env={
            "REDIS_URL": own_redis.model_server_url,
            "MLFLOW_TRACKING_URI": mlflow_uri,
            "SERVING_ALIAS": alias,
            "MODEL_RECONCILE_INTERVAL_SECONDS": "1",
            "MODEL_HEARTBEAT_INTERVAL_SECONDS": "1",
            "NO_PROXY": "127.0.0.1,localhost",
            "no_proxy": "127.0.0.1,localhost",
        },
        log_dir=tmp_path,
        replica="replica-1",
    ).start()
    worker = start_worker(
        tmp_path,
        redis_url=own_redis.url,
        database_url=database_url,
        mlflow_uri=mlflow_uri,
        extra_env={
            **RECOVERY_ENV,
            "AUTO_DEPLOY_ON_SUCCESS": "true",
            "MIN_ACCURACY_THRESHOLD": "0.5",
            "SERVING_ALIAS": alias,
            "MODEL_SERVER_URL": server.url,
            "DEPLOY_WAIT_SECONDS": "60",
        },
    )
    try:
        name = unique_model_name("redisless")
        repo: GitRepo = make_repo()
        sha = repo.commit({"train.ipynb": small_notebook(name)})
        pipeline_id = create_pipeline(database_url, repo, commit_sha=sha)
        worker.send(pipeline_id)
        wait_for(
            lambda: phase_status(database_url, pipeline_id, Phase.REGISTER) == PhaseStatus.RUNNING,
            120,
            0.05,
            "register to start",
        )
        own_redis.stop()
        stopped_at, stopped_wall = time.monotonic(), utcnow()
        state = wait_finished(database_url, pipeline_id, timeout=120)
        took = time.monotonic() - stopped_at
    finally:
        worker.stop()
        server.stop()
    print(f"Redis stopped during register -> {state['status']} {took:.1f} s later")
    assert state["status"] == "success", state
    assert state["phases"]["deploy"] == ("success", None)
    assert took < 120 + 60  # PIPELINE_TIMEOUT_SECONDS plus the stated margin
    with session_scope(database_url) as session:
        row = session.get(Pipeline, pipeline_id)
        assert row is not None and row.deployed
        assert row.log_archived_at is None  # left for the backend, once Redis answers
        deploy = next(phase for phase in row.phases if phase.name == Phase.DEPLOY)
        # The whole deploy ran without Redis: the replica's answer came over HTTP.
        assert deploy.started_at.replace(tzinfo=None) > stopped_wall.replace(tzinfo=None)


@pytest.fixture
def own_mlflow(tmp_path: Path) -> Iterator[MlflowServer]:
    """An MLflow server of this test's own, to stop without disturbing other tests."""
    server = MlflowServer(tmp_path / "mlflow")
    server.start()
    yield server
    server.stop()


def test_mlflow_stopped_mid_run_fails_the_pipeline_within_the_bound_naming_it(
    tmp_path: Path, redis_url: str, own_mlflow: MlflowServer, database_url: str, make_repo
) -> None:
    queue_url = flushed(redis_db_url(redis_url, 12))
    worker = start_worker(
        tmp_path,
        redis_url=queue_url,
        database_url=database_url,
        mlflow_uri=own_mlflow.uri,
        extra_env={**RECOVERY_ENV, "MLFLOW_RETRY_SECONDS": "5"},
    )
    try:
        repo: GitRepo = make_repo()
        notebook = small_notebook(
            unique_model_name("mlflowless"), training=SLOW_TRAINING.format(seconds=2)
        )
        pipeline_id = create_pipeline(
            database_url, repo, commit_sha=repo.commit({"train.ipynb": notebook})
        )
        worker.send(pipeline_id)
        wait_log(queue_url, pipeline_id, "training started")
        own_mlflow.stop()
        stopped_at = time.monotonic()
        state = wait_finished(database_url, pipeline_id, timeout=120)
        took = time.monotonic() - stopped_at
    finally:
        worker.stop()
    print(f"MLflow stopped mid-execute -> failed {took:.1f} s later: {state['error']}")
    assert state["status"] == "failed", state
    assert state["error"] == f"register: MLflow unreachable at {own_mlflow.uri} for 5 s"
    assert state["phases"]["register"] == (
        "failed",
        f"MLflow unreachable at {own_mlflow.uri} for 5 s",
    )
    # The rest of training (2 s), one retry window (5 s), and the kernel's and final writes.
    assert took < 2 + 5 + 20
    assert pipeline_state(database_url, pipeline_id)["finished_at"] is not None


# --- The parts, in this process (real Redis and databases, no worker) ---------------------


def parts_settings(tmp_path: Path, database_url: str, redis_url: str, **fields: Any) -> Settings:
    """Settings for code run in this process, on a Redis database no worker listens to."""
    return Settings(
        _env_file=None,  # type: ignore[call-arg]
        mlops_home=tmp_path / "home",
        database_url=database_url,
        redis_url=flushed(redis_db_url(redis_url, 9)),
        **fields,
    )


def lost_running_pipeline(database_url: str, attempts: int) -> int:
    """A pipeline whose worker died in execute 10 s ago, on its `attempts`-th attempt."""
    pipeline_id = create_pipeline(database_url, repo_url="file:///nowhere")
    with session_scope(database_url) as session:
        pipeline = session.get(Pipeline, pipeline_id)
        assert pipeline is not None
        pipeline.status = PipelineStatus.RUNNING
        pipeline.attempts = attempts
        pipeline.enqueued_at = pipeline.started_at = utcnow() - timedelta(minutes=5)
        pipeline.heartbeat_at = utcnow() - timedelta(seconds=10)
        pipeline.phases = [
            PipelinePhase(
                name=phase.value,
                position=i,
                status=status,
                started_at=None if status is PhaseStatus.PENDING else utcnow(),
            )
            for i, (phase, status) in enumerate(
                zip(
                    PHASE_ORDER,
                    [PhaseStatus.SUCCESS] * 3  # fetch, validate, environment
                    + [PhaseStatus.RUNNING]
                    + [PhaseStatus.PENDING] * 2,
                    strict=True,
                )
            )
        ]
    return pipeline_id


@pytest.mark.parametrize(
    ("attempts", "status", "error"),
    [
        (1, "queued", None),
        (3, "failed", "worker lost during execute (attempt 3 of 3)"),
    ],
)
def test_two_backends_finding_the_same_lost_pipeline_act_on_it_once(
    tmp_path: Path,
    any_database_url: str,
    redis_url: str,
    attempts: int,
    status: str,
    error: str | None,
) -> None:
    settings = parts_settings(tmp_path, any_database_url, redis_url, pipeline_recovery_seconds=4)
    pipeline_id = lost_running_pipeline(any_database_url, attempts)
    watches = [PipelineWatch(settings, PipelineQueue(settings)) for _ in range(2)]
    together = threading.Barrier(len(watches))

    def recover(watch: PipelineWatch) -> list[LostPipeline]:
        together.wait()
        return watch.recover_lost()

    with ThreadPoolExecutor(len(watches)) as pool:
        settled = [lost for found in pool.map(recover, watches) for lost in found]

    assert [lost.pipeline_id for lost in settled] == [pipeline_id]
    state = pipeline_state(any_database_url, pipeline_id)
    assert (state["status"], state["error"], state["attempts"]) == (status, error, attempts)
    texts = [event.text for event in log_events(settings.redis_url, pipeline_id)]
    if status == "queued":
        assert texts == ["worker lost during execute (attempt 1 of 3); queued again"]
        assert queued_on_broker(settings.redis_url) == 1
    else:
        assert texts == [error, "pipeline failed"]
        assert state["phases"]["execute"] == ("failed", "worker lost (attempt 3)")
        assert state["phases"]["deploy"] == ("skipped", None)
        assert queued_on_broker(settings.redis_url) == 0


def queued_on_broker(redis_url: str) -> int:
    client = redis.Redis.from_url(redis_url)
    try:
        return int(client.llen(PIPELINE_QUEUE))
    finally:
        client.close()


def sent_at(database_url: str, pipeline_id: int, seconds_ago: float) -> None:
    """Backdate the pipeline's send (`enqueued_at`)."""
    with session_scope(database_url) as session:
        pipeline = session.get(Pipeline, pipeline_id)
        assert pipeline is not None
        pipeline.enqueued_at = utcnow() - timedelta(seconds=seconds_ago)


def test_only_a_queued_pipeline_whose_message_vanished_long_enough_ago_is_sent_again(
    tmp_path: Path, any_database_url: str, redis_url: str
) -> None:
    settings = parts_settings(
        tmp_path,
        any_database_url,
        redis_url,
        pipeline_recovery_seconds=4,
        requeue_interval_seconds=0,  # send what is pending at once, however young
    )
    queue = PipelineQueue(settings)
    vanished, waiting, just_sent = (
        create_pipeline(any_database_url, repo_url="file:///nowhere") for _ in range(3)
    )
    running = lost_running_pipeline(any_database_url, attempts=1)
    try:
        assert queue.enqueue(vanished) and queue.enqueue(just_sent)
        queue.redis.flushdb()  # Redis came back without its data
        assert queue.enqueue(waiting)
        for pipeline_id in (vanished, waiting):
            sent_at(any_database_url, pipeline_id, seconds_ago=3)  # older than 4 s / 2
        assert waiting_pipeline_ids(queue.redis) == {waiting}

        assert queue.release_vanished() == 1
        assert pipeline_state(any_database_url, vanished)["status"] == "queued"
        assert queue.requeue_pending() == 1
        assert waiting_pipeline_ids(queue.redis) == {vanished, waiting}
        assert queue.release_vanished() == 0  # sent again just now, and on the queue
        assert pipeline_state(any_database_url, running)["status"] == "running"
    finally:
        queue.close()


def test_a_queued_pipeline_whose_message_vanished_is_sent_again_and_runs_once(
    tmp_path: Path,
    recovery_stack: RecoveryStack,
    database_url: str,
    mlflow_uri: str,
    make_repo,
) -> None:
    """The backend sent the pipeline, then Redis came back empty before a worker took it (or a
    worker died holding its message, unclaimed): the backend sends it again after
    PIPELINE_RECOVERY_SECONDS / 2. A second message for it, as kombu restores a dead worker's
    message after the visibility timeout, runs nothing more."""
    queue_url = recovery_stack.queue_url
    recovery_stack.processes.append(
        start_backend(tmp_path, redis_url=queue_url, database_url=database_url, env=RECOVERY_ENV)
    )
    broker = redis.Redis.from_url(queue_url)
    name = unique_model_name("resent")
    repo: GitRepo = make_repo()
    notebook = small_notebook(name, training=SLOW_TRAINING.format(seconds=4))
    pipeline_id = create_pipeline(
        database_url, repo, commit_sha=repo.commit({"train.ipynb": notebook})
    )
    try:
        wait_for(lambda: waiting_pipeline_ids(broker) == {pipeline_id}, 30, 0.05, "the send")
        sent = time.monotonic()
        broker.flushdb()
        wait_for(lambda: waiting_pipeline_ids(broker) == {pipeline_id}, 30, 0.05, "a new send")
        took = time.monotonic() - sent
        send_task(queue_url, pipeline_id)
        for worker in ("blue", "green"):
            recovery_stack.workers.append(
                start_worker(
                    tmp_path,
                    redis_url=queue_url,
                    database_url=database_url,
                    mlflow_uri=mlflow_uri,
                    extra_env=RECOVERY_ENV,
                    name=worker,
                )
            )
        state = wait_finished(database_url, pipeline_id, timeout=180)
        wait_for(lambda: queued_on_broker(queue_url) == 0, 30, 0.1, "both messages taken")
    finally:
        broker.close()
    print(f"sent, message lost -> sent again {took:.1f} s after the first send")
    assert 1.9 <= took < 10  # PIPELINE_RECOVERY_SECONDS / 2, plus a few passes
    assert state["status"] == "success", state
    assert state["attempts"] == 1
    versions = MlflowClient(mlflow_uri).search_model_versions(f"name='{name}'")
    assert [v.version for v in versions] == ["1"]


def test_a_log_redis_still_held_when_its_pipeline_ended_is_archived_once_redis_answers(
    tmp_path: Path, database_url: str, redis_url: str
) -> None:
    settings = parts_settings(tmp_path, database_url, redis_url)
    pipeline_id = create_pipeline(database_url, repo_url="file:///nowhere")
    with session_scope(database_url) as session:
        pipeline = session.get(Pipeline, pipeline_id)
        assert pipeline is not None
        pipeline.status = PipelineStatus.FAILED
        pipeline.finished_at = utcnow() - timedelta(minutes=5)
    client = redis.Redis.from_url(settings.redis_url)
    publisher = LogPublisher(client, pipeline_id)
    for n in range(3):
        publisher.publish(f"line {n}")
    client.close()

    unreachable = settings.model_copy(update={"redis_url": f"redis://127.0.0.1:{free_port()}/0"})
    assert PipelineWatch(unreachable, PipelineQueue(unreachable)).archive_logs() == 0
    watch = PipelineWatch(settings, PipelineQueue(settings))
    assert watch.archive_logs() == 1
    assert watch.archive_logs() == 0

    with session_scope(database_url) as session:
        assert [line.text for line in stored_log(session, pipeline_id)] == [
            "line 0",
            "line 1",
            "line 2",
        ]
        pipeline = session.get(Pipeline, pipeline_id)
        assert pipeline is not None and pipeline.log_archived_at is not None


def test_an_attempt_still_running_past_its_time_and_margin_is_failed_by_its_watchdog(
    tmp_path: Path, database_url: str, redis_url: str
) -> None:
    settings = parts_settings(
        tmp_path, database_url, redis_url, pipeline_recovery_seconds=1.6, pipeline_timeout_seconds=1
    )
    pipeline_id = create_pipeline(database_url, repo_url="file:///nowhere")
    claimed = claim(settings, pipeline_id)
    assert isinstance(claimed, Claim) and claimed.attempt == 1
    client = redis.Redis.from_url(settings.redis_url)
    ctx = phase_context(settings, client, tmp_path / "work", pipeline_id, phase="register")
    ctx.deadline = time.monotonic() - end_margin(settings)  # stuck in a call since then

    with RunLock(ctx) as lock:
        assert ctx.cancel_event.wait(5)
    client.close()

    expected = (
        "register: still running 180 s past PIPELINE_TIMEOUT_SECONDS=1 "
        "(a call hung past its own time limits)"
    )
    assert lock.lost == ctx.stop_reason == expected
    state = pipeline_state(database_url, pipeline_id)
    assert (state["status"], state["error"]) == ("failed", expected)
    # The attempt's own late end changes nothing.
    assert not lock.record_end(PipelineStatus.SUCCESS, None)
    assert pipeline_state(database_url, pipeline_id)["status"] == "failed"


def test_an_attempt_stops_beating_once_its_end_is_written(
    tmp_path: Path, database_url: str, redis_url: str
) -> None:
    """Found under load: the ended attempt, still archiving its log, kept beating; a pipeline set
    running again (as a redelivery after a lost end finds it) then looked held by a live attempt."""
    settings = parts_settings(tmp_path, database_url, redis_url, pipeline_recovery_seconds=1.6)
    pipeline_id = create_pipeline(database_url, repo_url="file:///nowhere")
    claimed = claim(settings, pipeline_id)
    assert isinstance(claimed, Claim)
    client = redis.Redis.from_url(settings.redis_url)
    ctx = phase_context(settings, client, tmp_path / "work", pipeline_id, phase="deploy")
    long_ago = utcnow() - timedelta(hours=1)
    with RunLock(ctx) as lock:
        assert lock.record_end(PipelineStatus.SUCCESS, None)
        with session_scope(database_url) as session:
            pipeline = session.get(Pipeline, pipeline_id)
            assert pipeline is not None
            pipeline.status, pipeline.heartbeat_at = PipelineStatus.RUNNING, long_ago
        time.sleep(3 * heartbeat_interval(settings))  # the attempt's log archive, say
    client.close()

    with session_scope(database_url) as session:
        pipeline = session.get(Pipeline, pipeline_id)
        assert pipeline is not None
        assert (
            abs(
                (
                    pipeline.heartbeat_at.replace(tzinfo=None) - long_ago.replace(tzinfo=None)
                ).total_seconds()
            )
            < 1
        )
    assert lock.lost is None


def test_mlflow_calls_ride_out_an_outage_for_the_window_then_fail_naming_mlflow(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")  # what the worker sets
    url, stop = dead_url(), threading.Event()
    client = PatientMlflow(url, retry_seconds=1.5, stop=stop)
    message = f"MLflow unreachable at {url} for 1.5 s"

    started = time.monotonic()
    with pytest.raises(MlflowUnreachable, match=message):
        client.search_model_versions("name = 'any'")
    assert 1.5 <= time.monotonic() - started < 5
    # One outage clock for every call: the next call that finds MLflow down fails at once.
    started = time.monotonic()
    with pytest.raises(MlflowUnreachable, match=message):
        client.get_run("0123")
    assert time.monotonic() - started < 1
    # A cancel ends the waiting at once.
    patient = PatientMlflow(url, retry_seconds=60, stop=stop)
    stop.set()
    started = time.monotonic()
    with pytest.raises(PipelineCancelled):
        patient.get_run("0123")
    assert time.monotonic() - started < 1


def test_a_crash_in_deploy_after_an_adopted_version_fails_the_pipeline_with_its_error(
    tmp_path: Path, database_url: str, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The runner once ran deploy apart after adopting a version, without the last `except`
    of the phase ladder: a crash there was recorded as "skipped" with no error."""
    settings = parts_settings(tmp_path, database_url, redis_url)
    pipeline_id = create_pipeline(database_url, repo_url="file:///nowhere")
    claimed = claim(settings, pipeline_id)
    assert isinstance(claimed, Claim)
    client = redis.Redis.from_url(settings.redis_url)
    ctx = phase_context(settings, client, tmp_path / "work", pipeline_id, phase="execute")

    def crash(ctx: PhaseContext) -> None:
        raise RuntimeError("the registry said no")

    def adopted(ctx: PhaseContext) -> bool:
        return True

    monkeypatch.setattr(
        pipeline_runner,
        "STEPS",
        (
            Step(Phase.EXECUTE, crash, done_before=adopted),
            Step(Phase.REGISTER, crash, done_before=adopted),
            Step(Phase.DEPLOY, crash),
        ),
    )
    outcome = pipeline_runner._run_phases(ctx, claimed)
    client.close()

    crashed = "internal error: RuntimeError: the registry said no"
    assert outcome == (PipelineStatus.FAILED, f"deploy: {crashed}")
    phases = pipeline_state(database_url, pipeline_id)["phases"]
    assert phases["execute"] == phases["register"] == ("success", None)
    assert phases["deploy"] == ("failed", crashed)
