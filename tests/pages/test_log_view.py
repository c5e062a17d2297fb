"""The pipeline page's live log in Chromium, fed by a publisher writing to Redis as the worker does.

Deterministic where the end-to-end run is not: the reader scrolls up while lines arrive, and the
backend restarts mid-run while more lines are written.
"""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import redis
from playwright.sync_api import Browser, Page, expect

from mlops_core.database import session_scope
from mlops_core.log_events import LogPublisher
from mlops_core.schema import Pipeline, PipelinePhase, utcnow
from tests.pages.conftest import API_TOKEN, Stack

HOSTILE = "<img src=x onerror=\"document.title='pwned'\">"


def running_pipeline(database_url: str) -> int:
    with session_scope(database_url) as session:
        pipeline = Pipeline(
            repo_url="file:///srv/git/iris.git",
            branch="main",
            notebook_path="notebooks/train.ipynb",
            status="running",
            trigger="push",
            commit_sha="0123456789abcdef0123456789abcdef01234567",
            started_at=utcnow(),
            phases=[
                PipelinePhase(
                    name="fetch",
                    position=0,
                    status="success",
                    started_at=utcnow(),
                    finished_at=utcnow(),
                ),
                PipelinePhase(name="execute", position=2, status="running", started_at=utcnow()),
            ],
        )
        session.add(pipeline)
        session.flush()
        return pipeline.id


def seqs_shown(page: Page) -> list[int]:
    return page.locator("#log .log-line[data-seq]").evaluate_all(
        "lines => lines.map(line => Number(line.dataset.seq))"
    )


def distance_from_bottom(page: Page) -> float:
    return page.locator("#log").evaluate("el => el.scrollHeight - el.scrollTop - el.clientHeight")


def test_log_follows_pauses_when_scrolled_up_and_resumes_after_reconnect(
    browser: Browser, backend: Stack, artifacts: Path
) -> None:
    pipeline_id = running_pipeline(backend.env["DATABASE_URL"])
    client = redis.Redis.from_url(backend.env["REDIS_URL"])
    publisher = LogPublisher(client, pipeline_id)

    def publish(first: int, last: int) -> None:
        for i in range(first, last + 1):
            publisher.publish(f"step {i}", phase="execute", cell=3, stream="stdout")

    publish(1, 79)
    publisher.publish(f"\x1b[31m{HOSTILE}\x1b[0m", phase="execute", cell=3, stream="stderr")

    page = browser.new_page(viewport={"width": 1280, "height": 900})
    sockets: list[str] = []
    page.on("websocket", lambda ws: sockets.append(ws.url))
    page.goto(f"{backend.url}/ui/pipelines/{pipeline_id}")
    log = page.locator("#log")
    expect(log.locator(".log-line[data-seq]")).to_have_count(80)
    expect(page.locator("#log-state")).to_have_text("live")
    assert distance_from_bottom(page) <= 24, "a new reader follows the tail"

    # Log text is text: the markup arrives verbatim, colour codes stripped, nothing rendered.
    expect(log).to_contain_text(HOSTILE)
    assert log.locator("img").count() == 0
    assert page.title() != "pwned"

    # Scrolling up pauses the auto-scroll; new lines are counted, not jumped to.
    log.evaluate("el => { el.scrollTop = 0; el.dispatchEvent(new Event('scroll')); }")
    publish(81, 120)
    expect(log.locator(".log-line[data-seq]")).to_have_count(120)
    follow = page.get_by_role("button", name=re.compile("Follow new lines"))
    expect(follow).to_have_text("Follow new lines ↓ (40 new)")
    assert log.evaluate("el => el.scrollTop") == 0
    follow.click()
    expect(follow).to_be_hidden()
    assert distance_from_bottom(page) <= 24

    # Cancel asks for confirmation, then for the API token, then asks the worker to stop.
    page.get_by_role("button", name="Cancel", exact=True).click()
    # Each button says what it does: no bare "Cancel" that could mean either.
    expect(page.locator("#confirm-dialog button")).to_have_text(
        ["Keep it running", "Cancel pipeline"]
    )
    page.locator("#confirm-dialog").get_by_role("button", name="Cancel pipeline").click()
    page.locator("#token-dialog").get_by_label("Token").fill(API_TOKEN)
    page.locator("#token-dialog").get_by_role("button", name="Save").click()
    expect(page.get_by_role("button", name="Cancelling…")).to_be_disabled()
    assert httpx.get(f"{backend.url}/pipelines/{pipeline_id}").json()["cancel_requested"]

    # The backend restarts mid-run; lines written meanwhile arrive once the page reconnects.
    backend.processes.pop("backend").stop()
    publish(121, 150)
    backend.start_backend()
    # (Playwright delivers page events only while it runs: wait with it, not with sleep.)
    for _ in range(300):
        if any(url.endswith("?after=120") for url in sockets):
            break
        page.wait_for_timeout(100)
    assert any(url.endswith("?after=120") for url in sockets), sockets
    publish(151, 160)
    with session_scope(backend.env["DATABASE_URL"]) as session:
        pipeline = session.get(Pipeline, pipeline_id)
        pipeline.status = "success"
        pipeline.finished_at = utcnow()
        for phase in pipeline.phases:
            phase.status, phase.finished_at = "success", utcnow()
    publisher.publish("pipeline success", stream="status", status="success")

    expect(page.locator("#log-state")).to_have_text("finished: success", timeout=20_000)
    assert seqs_shown(page) == list(range(1, 161)), "every line once, in order, across the restart"
    stored = httpx.get(f"{backend.url}/pipelines/{pipeline_id}/logs").json()["lines"]
    assert [line["seq"] for line in stored if line["stream"] != "status"] == seqs_shown(page)
    expect(page.locator("#pipeline-status")).to_have_text("Succeeded")
    page.screenshot(path=artifacts / "pipeline-log-resumed.png", full_page=True)
    page.close()
