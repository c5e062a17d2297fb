"""The pipelines page's filters and a repository's page, in Chromium, on pipelines of two repos
whose `owner/name` is the same (so their labels must say which is which)."""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path

import httpx
from playwright.sync_api import Browser, Page, expect

from mlops_core.database import session_scope
from mlops_core.schema import Pipeline, WebhookDelivery, utcnow
from tests.pages.conftest import API_TOKEN, Stack

GITHUB = "https://github.com/acme/iris"
GITLAB = "https://gitlab.example.com/acme/iris"


def register(stack: Stack, url: str) -> int:
    answer = httpx.post(
        f"{stack.url}/repos",
        json={"github_url": url, "create_webhook": False},
        headers={"Authorization": f"Bearer {API_TOKEN}"},
    )
    assert answer.status_code == 201, answer.text
    return answer.json()["id"]


def add_pipelines(database_url: str, github: int, gitlab: int) -> dict[str, int]:
    """Five runs: each status, trigger and repo more than once; returns their ids by name."""
    start = utcnow() - timedelta(hours=1)
    rows = {
        "served": (github, GITHUB, "success", "push", {"accuracy": 0.93}, None),
        "failed_execute": (
            github,
            GITHUB,
            "failed",
            "manual",
            {},
            "execute: cell 6 (mlops:training) raised KeyError: 'petal area'",
        ),
        "failed_fetch": (
            gitlab,
            GITLAB,
            "failed",
            "push",
            {},
            f"fetch: repository {GITLAB} not found or not accessible",
        ),
        "running": (gitlab, GITLAB, "running", "schedule", {}, None),
        "cancelled": (github, GITHUB, "cancelled", "retry", {}, "cancelled by request"),
    }
    ids = {}
    with session_scope(database_url) as session:
        for i, (name, (repo_id, url, status, trigger, metrics, error)) in enumerate(rows.items()):
            pipeline = Pipeline(
                repo_id=repo_id,
                repo_url=url,
                branch="main",
                notebook_path="notebooks/train.ipynb",
                status=status,
                trigger=trigger,
                commit_sha=f"{i + 1:x}" * 40,
                commit_message=f"Change number {i + 1}\n\nWhy it was made.",
                commit_author="Octo Cat",
                metrics=metrics,
                error=error,
                created_at=start + timedelta(minutes=i),
                started_at=start + timedelta(minutes=i),
                finished_at=None
                if status == "running"
                else start + timedelta(minutes=i, seconds=30),
            )
            session.add(pipeline)
            session.flush()
            ids[name] = pipeline.id
        session.add_all(
            [
                WebhookDelivery(
                    delivery_id="delivery-accepted",
                    event="push",
                    repo_id=github,
                    pipeline_id=ids["served"],
                    outcome="accepted",
                    received_at=start,
                ),
                WebhookDelivery(
                    delivery_id="delivery-ignored",
                    event="push",
                    repo_id=github,
                    outcome="ignored",
                    reason="push to branch 'dev'; this repo runs on branch 'main'",
                    received_at=start + timedelta(minutes=1),
                ),
            ]
        )
    return ids


def shown(page: Page) -> set[int]:
    rows = page.locator("#pipelines-body tr")
    return {int(i) for i in rows.evaluate_all("rows => rows.map(r => r.dataset.pipelineId)")}


def expect_rows(page: Page, ids: set[int]) -> None:
    expect(page.locator("#pipelines-body tr")).to_have_count(len(ids))
    for pipeline_id in ids:
        expect(
            page.locator(f'#pipelines-body tr[data-pipeline-id="{pipeline_id}"]')
        ).to_be_visible()
    assert shown(page) == ids


def test_filter_pipelines_by_status_repo_and_trigger_then_open_a_repository(
    browser: Browser, backend: Stack, artifacts: Path
) -> None:
    github, gitlab = register(backend, GITHUB), register(backend, GITLAB)
    ids = add_pipelines(backend.env["DATABASE_URL"], github, gitlab)
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))

    page.goto(f"{backend.url}/ui/")
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Pipelines").click()
    expect(page).to_have_url(f"{backend.url}/ui/pipelines")
    expect_rows(page, set(ids.values()))
    # Both repos are acme/iris: each label names its own.
    repo_filter = page.get_by_label("Repository")
    expect(repo_filter.locator("option")).to_have_text(
        ["Any repository", "github.com/acme/iris", "gitlab.example.com/acme/iris"]
    )
    # A run with no metrics says where it stopped.
    row = page.locator(f'#pipelines-body tr[data-pipeline-id="{ids["failed_execute"]}"]')
    expect(row.locator(".metric-cell")).to_have_text("no metrics (failed at execute)")
    expect(row).to_contain_text("Change number 2")
    fetch_row = page.locator(f'#pipelines-body tr[data-pipeline-id="{ids["failed_fetch"]}"]')
    expect(fetch_row.locator(".metric-cell")).to_have_text("no metrics (failed at fetch)")
    served_row = page.locator(f'#pipelines-body tr[data-pipeline-id="{ids["served"]}"]')
    expect(served_row.locator(".metric-cell")).to_have_text("accuracy 0.93")

    page.get_by_label("Status").select_option(label="Failed")
    expect_rows(page, {ids["failed_execute"], ids["failed_fetch"]})
    expect(page).to_have_url(re.compile(r"\?status=failed$"))
    repo_filter.select_option(label="github.com/acme/iris")
    expect_rows(page, {ids["failed_execute"]})
    page.get_by_role("button", name="Show all").click()
    expect_rows(page, set(ids.values()))
    page.get_by_label("Trigger").select_option(label="Push")
    expect_rows(page, {ids["served"], ids["failed_fetch"]})

    # The filters live in the address: a reload (or a shared link) shows the same list.
    page.goto(f"{backend.url}/ui/pipelines?status=failed&trigger=push")
    expect_rows(page, {ids["failed_fetch"]})
    expect(page.get_by_label("Status")).to_have_value("failed")
    expect(page.get_by_label("Trigger")).to_have_value("push")
    page.get_by_label("Trigger").select_option(label="Schedule")
    expect(page.locator("#pipelines-body tr")).to_have_count(0)
    expect(page.locator("#pipelines-empty")).to_be_visible()
    page.screenshot(path=artifacts / "pipelines-filtered.png", full_page=True)

    # A repository's page: its notebooks, its runs only, its webhook's deliveries.
    page.goto(f"{backend.url}/ui/pipelines")
    served_row.get_by_role("link", name="github.com/acme/iris").click()
    expect(page).to_have_url(f"{backend.url}/ui/repos/{github}")
    expect(page.locator("#repo-name")).to_have_text("github.com/acme/iris")
    expect(page.locator("#repo-notebooks")).to_contain_text("notebooks/train.ipynb")
    expect(page.locator("#runs-body tr")).to_have_count(3)
    runs = page.locator("#runs-body tr").evaluate_all("rows => rows.map(r => r.dataset.pipelineId)")
    assert {int(i) for i in runs} == {ids["served"], ids["failed_execute"], ids["cancelled"]}
    deliveries = page.locator("#repo-deliveries li")
    expect(deliveries).to_have_count(2)
    expect(deliveries.first).to_contain_text("ignored: push to branch 'dev'")
    expect(deliveries.nth(1).get_by_role("link", name=f"#{ids['served']}")).to_be_visible()
    expect(page.locator("#repo-webhook")).to_contain_text("not created by the platform")
    expect(page.locator("#repo-webhook-url")).to_have_value(f"{backend.url}/webhook/github")
    expect(page.locator("#repo-details")).to_contain_text("Branch")
    # Its newest run is the cancelled one, which reported nothing to GitHub (no token).
    expect(page.locator("#repo-status")).to_contain_text(f"#{ids['cancelled']}")
    expect(page.locator("#repo-status")).to_contain_text("nothing")
    page.screenshot(path=artifacts / "repo.png", full_page=True)
    assert errors == []
    page.close()
