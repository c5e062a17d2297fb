"""Champion/challenger through the whole stack: a worse push is registered, not served, and says
why with both numbers, on the pipeline's deploy result, the pipeline page and the model page;
serving it anyway takes a reason, kept in the deployment history.

The shipped iris notebook, pushed as a data scientist would: N_ESTIMATORS = 100 scores 0.933 and
is served; N_ESTIMATORS = 150 scores 0.900 on the same split. That passes the threshold (0.5
here) but is worse than the served version by more than GATE_TOLERANCE (0.01), and nothing in
the notebook asks for a progressive rollout (direct deploy).
"""

from __future__ import annotations

import re
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import nbformat
from playwright.sync_api import Browser, expect

from tests.pages.conftest import API_TOKEN, GitRemote, Stack
from tests.support.github import delivery, push_payload

NOTEBOOK = Path(__file__).resolve().parents[2] / "notebooks" / "iris_classifier.ipynb"
AUTH = {"Authorization": f"Bearer {API_TOKEN}"}
IRIS_ROW = [6.1, 2.8, 4.7, 1.2]


def iris(model_name: str, n_estimators: int) -> nbformat.NotebookNode:
    """The shipped example with its own model name and number of trees."""
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    for cell in notebook.cells:
        if "mlops:config" in cell.metadata.get("tags", []):
            cell.source = re.sub(
                r'MODEL_NAME = "[^"]*"', f'MODEL_NAME = "{model_name}"', cell.source
            )
            cell.source = re.sub(
                r"N_ESTIMATORS = \d+", f"N_ESTIMATORS = {n_estimators}", cell.source
            )
    return notebook


def push_and_wait(stack: Stack, remote: GitRemote, secret: str, before: str) -> dict[str, Any]:
    """Deliver the push of the remote's head, as GitHub would, and wait for its pipeline."""
    payload = push_payload(
        remote.url, before=before, after=remote.head, modified=[remote.notebook_path]
    )
    sent = delivery(payload, secret)
    accepted = httpx.post(f"{stack.url}/webhook/github", content=sent.body, headers=sent.headers)
    assert accepted.status_code == 202, accepted.text
    url = f"{stack.url}/pipelines/{accepted.json()['pipeline_id']}"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        pipeline = httpx.get(url).json()
        if pipeline["status"] in ("success", "failed", "cancelled"):
            assert pipeline["status"] == "success", pipeline["error"]
            return pipeline
        time.sleep(0.5)
    raise AssertionError(f"pipeline {url} did not finish in 180 s")


def test_a_worse_push_is_registered_not_served_and_serving_it_takes_a_reason(
    browser: Browser, stack: Stack, git_remote: GitRemote
) -> None:
    model = f"gate-iris-{uuid.uuid4().hex[:8]}"
    first_sha = git_remote.commit_notebook(iris(model, 100), "Add the iris notebook")
    repo = httpx.post(
        f"{stack.url}/repos",
        json={"github_url": git_remote.url, "notebook_path": git_remote.notebook_path},
        headers=AUTH,
    )
    assert repo.status_code == 201, repo.text
    secret = repo.json()["webhook_secret"]

    first = push_and_wait(stack, git_remote, secret, "0" * 40)
    assert first["deployed"] is True and first["model_version"] == "1"
    assert round(first["metrics"]["accuracy"], 3) == 0.933

    git_remote.commit_notebook(iris(model, 150), "More trees")
    second = push_and_wait(stack, git_remote, secret, first_sha)
    assert second["model_version"] == "2" and round(second["metrics"]["accuracy"], 3) == 0.9
    assert second["deployed"] is False
    deploy = next(phase for phase in second["phases"] if phase["name"] == "deploy")
    refused = "accuracy 0.900 < served v1 0.933 - 0.01"
    assert deploy["status"] == "skipped"
    assert deploy["error"].startswith(f"{refused}: worse than the served version")
    assert deploy["error"].endswith(f"; {model} version 2 is registered, not served")
    verdict = second["params"]["gate_verdict"]
    assert (verdict["passed"], verdict["failed_rule"], verdict["served_version"]) == (
        False,
        "served",
        "1",
    )
    detail = httpx.get(f"{stack.url}/models/{model}").json()
    assert detail["served_version"] == "1"
    assert {v["version"]: v["verdict"]["passed"] for v in detail["versions"]} == {
        "1": True,
        "2": False,
    }
    answer = httpx.post(f"{stack.model_server_url}/predict/{model}", json={"data": [IRIS_ROW]})
    assert answer.json()["model_version"] == "1"

    context = browser.new_context(base_url=stack.url)
    context.add_init_script(f"localStorage.setItem('notebook-mlops.apiToken', '{API_TOKEN}')")
    page = context.new_page()
    # The pipeline page says which rule refused it, with both numbers.
    page.goto(f"/ui/pipelines/{second['id']}")
    gate = page.locator("#details .verdict")
    expect(gate).to_have_attribute("data-passed", "false")
    expect(gate).to_contain_text("Below gate")
    expect(gate).to_contain_text(refused)

    # The model page marks v2 below its gate beside v1's pass; deploying it asks why first.
    page.goto(f"/ui/models/{model}")
    below = page.locator('#versions-body tr[data-version="2"]')
    expect(below.locator(".verdict")).to_have_attribute("data-passed", "false")
    expect(below.locator(".verdict")).to_contain_text(refused)
    served_row = page.locator('#versions-body tr[data-version="1"]')
    expect(served_row.locator(".verdict")).to_have_attribute("data-passed", "true")
    expect(served_row.locator(".verdict")).to_contain_text("gate accuracy >= 0.5 passed")

    below.get_by_role("button", name="Deploy to version 2").click()
    dialog = page.locator("#force-dialog")
    expect(dialog).to_be_visible()
    expect(dialog.locator("#force-verdict")).to_contain_text(refused)
    dialog.get_by_role("button", name="Deploy v2 anyway").click()
    expect(dialog).to_be_visible()  # no reason given: the form does not submit
    dialog.get_by_label("Why serve it anyway?").fill("v1 misses the new flower supplier")
    dialog.get_by_role("button", name="Deploy v2 anyway").click()
    expect(page.locator("#served-version")).to_have_text("v2", timeout=20_000)
    history = page.locator("#history li").first
    expect(history).to_contain_text("Deployed v2")
    expect(history).to_contain_text(f"below its gate ({refused}")
    expect(history).to_contain_text("deployed anyway: v1 misses the new flower supplier")
    context.close()
