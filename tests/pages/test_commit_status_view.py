"""The pipeline page shows why it ran, the trigger's parameters, and what GitHub was told."""

from __future__ import annotations

from playwright.sync_api import Browser, expect

from mlops_core.database import session_scope
from mlops_core.schema import CommitStatus, Pipeline, utcnow
from tests.pages.conftest import Stack

SHA = "0123456789abcdef0123456789abcdef01234567"


def reported_pipeline(database_url: str, page_url: str) -> int:
    """A failed pipeline whose pending status reached GitHub and whose failure was refused."""
    with session_scope(database_url) as session:
        pipeline = Pipeline(
            repo_url="file:///srv/git/iris.git",
            branch="main",
            notebook_path="notebooks/train.ipynb",
            status="failed",
            trigger="manual",
            trigger_detail=None,
            parameters={"C": 0.25, "LABELS": ["a", "b"]},
            commit_sha=SHA,
            error="execute: cell 5 (mlops:evaluation) raised ValueError: no",
            started_at=utcnow(),
            finished_at=utcnow(),
            commit_status_settled_at=utcnow(),
        )
        session.add(pipeline)
        session.flush()
        for position, (state, description, delivery, error) in enumerate(
            [
                ("pending", "queued", "posted", None),
                ("failure", pipeline.error, "failed", "GitHub answered 401: Bad credentials"),
            ],
            start=1,
        ):
            session.add(
                CommitStatus(
                    pipeline_id=pipeline.id,
                    position=position,
                    commit_sha=SHA,
                    context="mlops/notebooks/train.ipynb",
                    state=state,
                    description=description,
                    target_url=f"{page_url}/ui/pipelines/{pipeline.id}",
                    delivery=delivery,
                    attempts=1,
                    last_error=error,
                    wanted_at=utcnow(),
                    next_attempt_at=utcnow(),
                    posted_at=utcnow() if delivery == "posted" else None,
                )
            )
        return pipeline.id


def test_the_pipeline_page_lists_its_parameters_and_commit_statuses(
    browser: Browser, backend: Stack
) -> None:
    pipeline_id = reported_pipeline(backend.env["DATABASE_URL"], backend.url)
    page = browser.new_page()
    page.goto(f"{backend.url}/ui/pipelines/{pipeline_id}")
    expect(page.locator("#details")).to_contain_text('C=0.25, LABELS=["a","b"]')
    card = page.locator("#statuses-card")
    expect(card).to_be_visible()
    expect(card.locator("dt")).to_have_text(["pending", "failure"])
    expect(card.locator("dd").nth(0)).to_contain_text("queued · posted")
    expect(card.locator("dd").nth(1)).to_contain_text(
        "raised ValueError: no · failed: GitHub answered 401: Bad credentials"
    )
    page.close()
