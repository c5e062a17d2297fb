"""Live pipeline logs over a real backend process, a real Redis and real WebSocket clients."""

from __future__ import annotations

import asyncio
import socket

import httpx
import redis
from websockets.asyncio.client import connect

from mlops_cli.log_follow import events_of
from mlops_core.log_events import LogPublisher
from tests.logs.conftest import Backend, PublishingWorker, expected_texts, watch

LINES = 400


def test_viewers_joining_at_any_time_get_every_line_once_in_order(backend: Backend) -> None:
    pipeline_id = backend.new_pipeline()
    worker = PublishingWorker(backend.redis_url, pipeline_id, LINES)

    async def scenario() -> list:
        early = asyncio.create_task(watch(backend.log_socket(pipeline_id)))
        await asyncio.sleep(0.3)  # the early viewer is streaming before the first line
        worker.start()
        joined_mid_run = []
        for progress in (50, 150, 300):
            await worker.wait_progress(progress)
            joined_mid_run.append(asyncio.create_task(watch(backend.log_socket(pipeline_id))))
        await asyncio.to_thread(worker.join, 30)
        late = await watch(backend.log_socket(pipeline_id))
        return [await early, *[await task for task in joined_mid_run], late]

    viewers = asyncio.run(scenario())
    assert worker.error is None
    # The late viewer's history came in batches (a JSON array per message), not line by line.
    assert viewers[-1].messages <= 3
    for viewer in viewers:
        assert viewer.seqs == list(range(1, LINES + 2))
        assert [event["text"] for event in viewer.events[:-1]] == expected_texts(LINES)
        assert viewer.final["stream"] == "status"
        assert viewer.final["status"] == "success"
        assert viewer.close_code == 1000


def test_fifty_concurrent_viewers_each_get_every_line_exactly_once_over_one_subscription(
    backend: Backend,
) -> None:
    pipeline_id = backend.new_pipeline()
    worker = PublishingWorker(backend.redis_url, pipeline_id, 300, final_status="failed")
    client = redis.Redis.from_url(backend.redis_url)

    async def scenario() -> list:
        viewers = [asyncio.create_task(watch(backend.log_socket(pipeline_id))) for _ in range(50)]
        await asyncio.sleep(0.5)
        worker.start()
        await worker.wait_progress(150)
        # Mid-run, all fifty viewers share the process's one Redis subscription.
        subscribed = [
            c for c in client.client_list() if c["name"] == f"mlops-backend-{backend.process.pid}"
        ]
        pubsub_clients = [c for c in subscribed if int(c["psub"]) or int(c["sub"])]
        assert len(pubsub_clients) == 1, subscribed
        return list(await asyncio.gather(*viewers))

    viewers = asyncio.run(scenario())
    assert len(viewers) == 50
    for viewer in viewers:
        assert viewer.seqs == list(range(1, 302))
        assert [event["text"] for event in viewer.events[:-1]] == expected_texts(300)
        assert viewer.final["status"] == "failed"
        assert viewer.close_code == 1000


def test_resume_after_a_seq_sends_only_later_lines(backend: Backend) -> None:
    pipeline_id = backend.new_pipeline()
    worker = PublishingWorker(backend.redis_url, pipeline_id, 200, interval=0.005)

    async def scenario() -> tuple:
        worker.start()
        await worker.wait_progress(100)
        resumed_mid_run = asyncio.create_task(watch(backend.log_socket(pipeline_id, after=60)))
        await asyncio.to_thread(worker.join, 30)
        resumed_after_end = await watch(backend.log_socket(pipeline_id, after=150))
        return await resumed_mid_run, resumed_after_end

    mid_run, after_end = asyncio.run(scenario())
    assert mid_run.seqs == list(range(61, 202))
    assert mid_run.events[0]["text"] == "line 61"
    assert after_end.seqs == list(range(151, 202))
    assert after_end.final["status"] == "success"


def test_unknown_pipeline_is_closed_with_4404_and_rest_answers_404(backend: Backend) -> None:
    missing = backend.new_pipeline() + 1

    viewer = asyncio.run(watch(backend.log_socket(missing)))
    assert viewer.close_code == 4404
    assert viewer.close_reason == f"pipeline {missing} not found"
    assert viewer.events == []

    response = httpx.get(f"{backend.http_url}/pipelines/{missing}/logs")
    assert response.status_code == 404
    assert response.json()["detail"] == f"pipeline {missing} not found"


def test_idle_viewer_gets_pings_and_is_closed_when_the_pipeline_ends_without_a_final_event(
    backend: Backend,
) -> None:
    """A queued pipeline cancelled before any worker ran it never publishes a status event."""
    pipeline_id = backend.new_pipeline(status="queued")

    async def scenario():  # type: ignore[no-untyped-def]
        viewer = asyncio.create_task(watch(backend.log_socket(pipeline_id)))
        await asyncio.sleep(2.0)  # four ping intervals of silence
        assert not viewer.done()
        await asyncio.to_thread(backend.set_status, pipeline_id, "cancelled")
        return await viewer

    viewer = asyncio.run(scenario())
    assert viewer.pings >= 2
    assert len(viewer.events) == 1
    assert viewer.final["stream"] == "status"
    assert viewer.final["status"] == "cancelled"
    assert viewer.close_code == 1000


def test_rest_pages_through_a_running_pipeline_log_from_redis(backend: Backend) -> None:
    pipeline_id = backend.new_pipeline()
    worker = PublishingWorker(backend.redis_url, pipeline_id, 120, interval=0, final_status=None)
    worker.run()

    texts, after = [], 0
    while True:
        page = httpx.get(
            f"{backend.http_url}/pipelines/{pipeline_id}/logs",
            params={"after": after, "limit": 50},
        ).json()
        assert page["status"] == "running"
        assert page["finished"] is False
        if not page["lines"]:
            break
        texts += [line["text"] for line in page["lines"]]
        after = page["next_after"]
    assert texts == expected_texts(120)
    assert after == 120

    bad = httpx.get(f"{backend.http_url}/pipelines/{pipeline_id}/logs", params={"limit": 0})
    assert bad.status_code == 422
    assert "limit" in bad.text


def test_a_viewer_too_slow_to_keep_up_still_gets_every_line_once(backend: Backend) -> None:
    """Its live queue overflows while it does not read; it then catches up from the history."""
    pipeline_id = backend.new_pipeline()
    lines, payload = 5000, "y" * 4000  # ~20 MB: far more than the buffers below and the queue
    # A small receive buffer set before connecting (which turns autotuning off) makes the
    # server's sends block, as with a viewer on a slow network.
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
    sock.connect(("127.0.0.1", int(backend.http_url.rsplit(":", 1)[1])))

    async def scenario() -> list[int]:
        url = backend.log_socket(pipeline_id)
        async with connect(url, sock=sock, max_queue=4, compression=None) as ws:
            await asyncio.sleep(0.3)
            publisher = LogPublisher(redis.Redis.from_url(backend.redis_url), pipeline_id)
            for i in range(1, lines + 1):
                publisher.publish(f"{i} {payload}", stream="stdout")
            publisher.publish("pipeline success", stream="status", status="success")
            seqs = []
            async for message in ws:
                for event in events_of(message):
                    seqs.append(event["seq"])
                    assert event["stream"] == "status" or event["text"].startswith(
                        f"{event['seq']} "
                    )
            return seqs

    assert asyncio.run(scenario()) == list(range(1, lines + 2))
    assert f"a viewer of pipeline {pipeline_id} fell behind" in backend.process.log_text()
