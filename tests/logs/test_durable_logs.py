"""Logs outlive Redis: archived when the pipeline ends, served from the DB once Redis lost them.

These tests flush and restart Redis, so they use the private redis-server of `durable_backend`.
"""

from __future__ import annotations

import asyncio
import subprocess
import time

import httpx
import redis

from mlops_core.database import session_scope
from mlops_core.log_archive import archive_log, stored_log
from mlops_core.log_events import LogPublisher
from tests.logs.conftest import Backend, PublishingWorker, expected_texts, watch
from tests.support.processes import VENV_BIN, wait_for
from tests.support.services import RedisServer


def _archive(backend: Backend, pipeline_id: int) -> int:
    client = redis.Redis.from_url(backend.redis_url)
    with session_scope(backend.database_url) as session:
        return archive_log(session, client, pipeline_id)


def test_an_ended_pipeline_log_survives_flushall_over_websocket_and_rest(
    durable_backend: Backend,
) -> None:
    backend = durable_backend
    pipeline_id = backend.new_pipeline()
    worker = PublishingWorker(backend.redis_url, pipeline_id, 150, interval=0, final_status=None)
    worker.run()
    worker.publisher.publish("pipeline failed", stream="status", status="failed")
    backend.set_status(pipeline_id, "failed")
    assert _archive(backend, pipeline_id) == 151

    redis.Redis.from_url(backend.redis_url).flushall()

    viewer = asyncio.run(watch(backend.log_socket(pipeline_id)))
    assert viewer.seqs == list(range(1, 152))
    assert [event["text"] for event in viewer.events[:-1]] == expected_texts(150)
    assert viewer.final["stream"] == "status"
    assert viewer.final["status"] == "failed"
    assert viewer.close_code == 1000

    resumed = asyncio.run(watch(backend.log_socket(pipeline_id, after=140)))
    assert resumed.seqs == list(range(141, 152))

    page = httpx.get(f"{backend.http_url}/pipelines/{pipeline_id}/logs").json()
    assert page["status"] == "failed"
    assert page["finished"] is True
    assert [line["seq"] for line in page["lines"]] == list(range(1, 152))
    assert page["lines"][-1]["status"] == "failed"
    assert page["next_after"] == 151

    # A retried task archives again after Redis lost the log: the archive must not be wiped.
    assert _archive(backend, pipeline_id) == 0
    with session_scope(backend.database_url) as session:
        assert len(stored_log(session, pipeline_id, limit=1000)) == 151


def test_a_viewer_keeps_following_across_a_redis_restart(
    durable_backend: Backend, private_redis: RedisServer
) -> None:
    backend = durable_backend
    pipeline_id = backend.new_pipeline()
    client = redis.Redis.from_url(backend.redis_url)
    publisher = LogPublisher(client, pipeline_id)
    fanout_name = f"mlops-backend-{backend.process.pid}"

    def fanout_subscribed() -> bool:
        return any(c["name"] == fanout_name and int(c["psub"]) for c in client.client_list())

    async def scenario():  # type: ignore[no-untyped-def]
        viewer = asyncio.create_task(watch(backend.log_socket(pipeline_id)))
        await asyncio.sleep(0.5)
        for i in range(1, 51):
            publisher.publish(f"line {i}", stream="stdout")
        await asyncio.sleep(0.5)
        await asyncio.to_thread(private_redis.stop)
        await asyncio.to_thread(private_redis.start)  # same port, empty: every key is gone
        await asyncio.to_thread(wait_for, fanout_subscribed, 20, 0.1, "fan-out resubscribed")
        for i in range(51, 101):
            publisher.publish(f"line {i}", stream="stdout")
        publisher.publish("pipeline success", stream="status", status="success")
        return await viewer

    viewer = asyncio.run(scenario())
    # Numbering continued above 50 although Redis lost its counter, and nothing was repeated.
    assert viewer.seqs == list(range(1, 102))
    assert [event["text"] for event in viewer.events[:-1]] == expected_texts(100)
    assert viewer.final["status"] == "success"


def test_archiving_twice_replaces_rows_instead_of_duplicating_them(
    durable_backend: Backend,
) -> None:
    backend = durable_backend
    pipeline_id = backend.new_pipeline()
    PublishingWorker(backend.redis_url, pipeline_id, 30, interval=0).run()
    assert _archive(backend, pipeline_id) == 31
    assert _archive(backend, pipeline_id) == 31
    with session_scope(backend.database_url) as session:
        assert [line.seq for line in stored_log(session, pipeline_id)] == list(range(1, 32))


def test_while_redis_is_down_viewers_are_told_to_retry_and_the_cli_resumes_when_it_is_back(
    durable_backend: Backend, private_redis: RedisServer
) -> None:
    backend = durable_backend
    pipeline_id = backend.new_pipeline()
    client = redis.Redis.from_url(backend.redis_url)
    fanout_name = f"mlops-backend-{backend.process.pid}"
    private_redis.stop()
    try:
        refused = asyncio.run(watch(backend.log_socket(pipeline_id)))
        assert refused.close_code == 1013
        assert "unavailable" in (refused.close_reason or "")
        cli = subprocess.Popen(
            [str(VENV_BIN / "mlops"), "logs", str(pipeline_id), "-f", "--api", backend.http_url],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        time.sleep(2.0)  # the CLI is retrying
        assert cli.poll() is None
    finally:
        private_redis.start()
    wait_for(
        lambda: any(c["name"] == fanout_name and int(c["psub"]) for c in client.client_list()),
        20,
        0.1,
        "fan-out resubscribed",
    )
    PublishingWorker(backend.redis_url, pipeline_id, 20, interval=0.05).start()
    stdout, stderr = cli.communicate(timeout=60)
    assert cli.returncode == 0, stderr
    assert stdout.splitlines() == [*expected_texts(20), "[mlops] pipeline success"]
