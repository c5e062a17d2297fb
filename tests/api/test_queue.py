"""Webhook intake to a real Celery worker: a burst loses nothing, a Redis outage loses nothing."""

from __future__ import annotations

import asyncio
import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import httpx
from sqlalchemy import func, select

from mlops_core.database import session_scope
from mlops_core.schema import Pipeline
from tests.api.conftest import (
    NOTEBOOK,
    Api,
    LiveBackend,
    queued_messages,
    wait_until_picked_up,
)
from tests.support.github import Delivery, delivery, push_payload, random_sha
from tests.support.processes import ManagedProcess
from tests.support.services import RedisServer

BURST = 200
GITHUB_TIMEOUT_SECONDS = 10.0  # GitHub abandons a delivery not answered within 10 s


async def _deliver_all(url: str, deliveries: list[Delivery]) -> list[tuple[int, float, dict]]:  # type: ignore[type-arg]
    """Send every delivery at once, each on its own connection, as GitHub's senders would."""
    limits = httpx.Limits(max_connections=len(deliveries))
    async with httpx.AsyncClient(
        base_url=url, timeout=GITHUB_TIMEOUT_SECONDS, limits=limits
    ) as client:

        async def one(item: Delivery) -> tuple[int, float, dict]:  # type: ignore[type-arg]
            started = time.monotonic()
            response = await client.post("/webhook/github", content=item.body, headers=item.headers)
            return response.status_code, time.monotonic() - started, response.json()

        return await asyncio.gather(*(one(item) for item in deliveries))


def test_burst_of_signed_pushes_gives_one_pipeline_each_all_picked_up(
    any_database_url: str,
    queue_redis_url: str,
    start_backend: Callable[..., LiveBackend],
    start_worker: Callable[..., ManagedProcess],
    tmp_path: Path,
) -> None:
    backend = start_backend(
        DATABASE_URL=any_database_url, REDIS_URL=queue_redis_url, REQUEUE_INTERVAL_SECONDS="0.5"
    )
    repo_url = (tmp_path / "absent-repo").as_uri()  # bogus commits: runs end quickly
    created = httpx.post(f"{backend.url}/repos", json={"github_url": repo_url}, timeout=10)
    assert created.status_code == 201, created.text
    secret = created.json()["webhook_secret"]
    deliveries = [
        delivery(push_payload(repo_url, after=random_sha(), modified=[NOTEBOOK]), secret)
        for _ in range(BURST)
    ]

    results = asyncio.run(_deliver_all(backend.url, deliveries))

    latencies = sorted(latency for _, latency, _ in results)
    print(
        f"\n{BURST} concurrent deliveries: p50 {statistics.median(latencies):.2f}s, "
        f"p95 {latencies[int(0.95 * BURST) - 1]:.2f}s, max {latencies[-1]:.2f}s"
    )
    assert [code for code, _, _ in results] == [202] * BURST
    ids = [body["pipeline_id"] for _, _, body in results]
    assert len(set(ids)) == BURST
    with session_scope(any_database_url) as session:
        assert session.scalar(select(func.count()).select_from(Pipeline)) == BURST
        shas = set(session.scalars(select(Pipeline.commit_sha)))
    assert shas == {payload_sha(item) for item in deliveries}

    # Every pipeline reached the broker exactly once, even after a few re-queue passes...
    time.sleep(1.5)
    assert queued_messages(queue_redis_url) == BURST
    with session_scope(any_database_url) as session:
        unmarked = select(func.count()).where(Pipeline.enqueued_at.is_(None))
        assert session.scalar(unmarked) == 0
    # ...and a worker started now (not during the burst, where it would only compete for the
    # machine's two cores) takes each of them.
    worker = start_worker(any_database_url, queue_redis_url)
    wait_until_picked_up(any_database_url, ids, timeout=180)
    assert worker.alive(), worker.log_text()[-3000:]


def payload_sha(item: Delivery) -> str:
    return json.loads(item.body)["after"]


def test_pushes_during_a_redis_outage_are_accepted_and_run_once_it_is_back(
    make_api: Callable[..., Api],
    start_worker: Callable[..., ManagedProcess],
    tmp_path: Path,
) -> None:
    outage_redis = RedisServer(tmp_path / "outage-redis")
    outage_redis.start()
    try:
        api = make_api(redis_url=outage_redis.url, requeue_interval_seconds=0.3)
        start_worker(api.database_url, outage_redis.url)
        repo = api.register((tmp_path / "absent-repo").as_uri())

        outage_redis.stop()
        responses = [
            api.deliver(
                delivery(
                    push_payload(repo["github_url"], modified=[NOTEBOOK]), repo["webhook_secret"]
                )
            )
            for _ in range(5)
        ]
        assert [r.status_code for r in responses] == [202] * 5
        ids = [r.json()["pipeline_id"] for r in responses]
        time.sleep(1.0)  # several re-queue passes while Redis is still down
        down = [api.pipeline(pipeline_id) for pipeline_id in ids]
        assert {(row.status, row.enqueued_at) for row in down} == {("queued", None)}
        failures = api.client.get("/metrics").text
        assert "mlops_enqueue_failures_total" in failures

        outage_redis.start()
        rows = wait_until_picked_up(api.database_url, ids, timeout=90)
        assert all(row.enqueued_at is not None for row in rows)
        assert [row.attempts for row in rows] == [1] * 5  # each sent once: no duplicate runs
        assert queued_messages(outage_redis.url) == 0
    finally:
        outage_redis.stop()
