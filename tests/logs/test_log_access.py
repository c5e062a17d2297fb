"""The log's read guard over a real backend process: REST, and the WebSocket three ways.

Browsers offer the token as WebSocket subprotocols, other clients send a header, and `?token=`
is the last resort, which must never reach the access log.
"""

from __future__ import annotations

import asyncio

import httpx
import pytest

from mlops_core.access_tokens import CLOSE_UNAUTHORIZED
from tests.logs.conftest import (
    ADMIN_TOKEN,
    READ_TOKEN,
    Backend,
    PublishingWorker,
    ViewerResult,
    watch,
)
from tests.support.processes import wait_for

LINES = 30


@pytest.fixture
def finished_pipeline(guarded_backend: Backend) -> int:
    """A pipeline whose whole log, final status included, is in Redis."""
    pipeline_id = guarded_backend.new_pipeline()
    PublishingWorker(guarded_backend.redis_url, pipeline_id, LINES, interval=0).run()
    return pipeline_id


def view(url: str, **options: object) -> ViewerResult:
    return asyncio.run(watch(url, limit_seconds=20, **options))


def assert_whole_log(viewer: ViewerResult) -> None:
    assert viewer.seqs == list(range(1, LINES + 2))
    assert viewer.final["status"] == "success"
    assert viewer.close_code == 1000


def test_the_socket_takes_the_token_as_subprotocols_a_header_or_the_query(
    guarded_backend: Backend, finished_pipeline: int
) -> None:
    url = guarded_backend.log_socket(finished_pipeline)
    for token in (READ_TOKEN, ADMIN_TOKEN):
        viewer = view(url, subprotocols=["bearer", token])
        assert_whole_log(viewer)
        assert viewer.subprotocol == "bearer"  # the protocol's name only, never the token
    assert_whole_log(view(url, subprotocols=["bearer", f"bearer.{READ_TOKEN}"]))
    alone = view(url, subprotocols=[f"bearer.{READ_TOKEN}"])
    assert_whole_log(alone)
    assert alone.subprotocol is None  # answering it would echo the token
    assert_whole_log(view(url, additional_headers={"Authorization": f"Bearer {READ_TOKEN}"}))
    assert_whole_log(view(f"{url}?token={READ_TOKEN}"))


def test_the_socket_closes_with_4401_without_the_read_token(
    guarded_backend: Backend, finished_pipeline: int
) -> None:
    url = guarded_backend.log_socket(finished_pipeline)
    for options, problem in (
        ({}, "missing read token"),
        ({"subprotocols": ["bearer"]}, "missing read token"),
        ({"subprotocols": ["bearer", "wrong"]}, "invalid read token"),
        ({"additional_headers": {"Authorization": "Bearer wrong"}}, "invalid read token"),
    ):
        viewer = view(url, **options)
        assert viewer.events == [], options
        assert viewer.close_code == CLOSE_UNAUTHORIZED, options
        assert viewer.close_reason is not None
        assert viewer.close_reason.startswith(problem), viewer.close_reason
        assert "API_READ_TOKEN" in viewer.close_reason
    # An unknown pipeline is not told apart from a known one without the token.
    assert view(guarded_backend.log_socket(finished_pipeline + 1)).close_code == 4401


def test_the_stored_log_needs_the_read_token(
    guarded_backend: Backend, finished_pipeline: int
) -> None:
    url = f"{guarded_backend.http_url}/pipelines/{finished_pipeline}/logs"
    refused = httpx.get(url)
    assert refused.status_code == 401
    assert refused.json()["detail"].startswith("missing read token")
    answered = httpx.get(url, headers={"Authorization": f"Bearer {READ_TOKEN}"})
    assert answered.status_code == 200
    assert len(answered.json()["lines"]) == LINES + 1

    # The whole log as text (the page's "Download log"), behind the same guard.
    text_url = f"{url}.txt"
    refused = httpx.get(text_url)
    assert refused.status_code == 401
    assert refused.json()["detail"].startswith("missing read token")
    assert httpx.get(text_url, headers={"Authorization": "Bearer wrong"}).status_code == 401
    text = httpx.get(text_url, headers={"Authorization": f"Bearer {READ_TOKEN}"})
    assert text.status_code == 200
    assert text.headers["content-type"] == "text/plain; charset=utf-8"
    assert f'filename="pipeline-{finished_pipeline}.log"' in text.headers["content-disposition"]
    lines = text.text.splitlines()
    stored = answered.json()["lines"]
    assert len(lines) == len(stored)
    for line, event in zip(lines, stored, strict=True):
        assert line.endswith(f" {event['text']}"), (line, event)
    assert (
        httpx.get(
            f"{guarded_backend.http_url}/pipelines/424242/logs.txt",
            headers={"Authorization": f"Bearer {READ_TOKEN}"},
        ).status_code
        == 404
    )


def test_a_query_token_never_reaches_the_access_log(
    guarded_backend: Backend, finished_pipeline: int
) -> None:
    url = guarded_backend.log_socket(finished_pipeline)
    assert_whole_log(view(f"{url}?token={READ_TOKEN}"))
    assert_whole_log(view(f"{url}?tok%65n={ADMIN_TOKEN}"))  # the name as the server decodes it
    assert view(f"{url}?token=wrong-{READ_TOKEN}").close_code == CLOSE_UNAUTHORIZED
    httpx.get(f"{guarded_backend.http_url}/pipelines?token={READ_TOKEN}")  # REST: access log

    redacted = [
        f"/ws/pipelines/{finished_pipeline}/logs?token=[redacted]",
        "/pipelines?token=[redacted]",
    ]

    def logged() -> str | None:
        text = guarded_backend.process.log_text()
        return text if all(line in text for line in redacted) else None

    text = wait_for(logged, 10, 0.1, "the redacted lines in the backend's log")
    assert READ_TOKEN not in text
    assert ADMIN_TOKEN not in text
