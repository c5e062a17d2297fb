"""The main job done through the dashboard, in Chromium, against the whole stack.

Register a repo with the form (the page asks for the API token), push (a signed webhook), see
the pipeline appear on the overview without a reload, follow its log to the end, run it again,
predict on the model page, roll back with the button and see the served version change; then
every page at phone width. Screenshots land in test-artifacts/pages/.
"""

from __future__ import annotations

import re
import uuid
from pathlib import Path

import httpx
from playwright.sync_api import Browser, BrowserContext, Page, expect

from tests.pages.conftest import API_TOKEN, GitRemote, Stack, iris_notebook
from tests.support.github import delivery, push_payload
from tests.support.processes import wait_for

PIPELINE_TIMEOUT_MS = 120_000
IRIS_ROW = [6.1, 2.8, 4.7, 1.2]


def watch_errors(context: BrowserContext, stack: Stack) -> tuple[list[str], list[str]]:
    """Collect uncaught page errors, and every request that left the backend's origin."""
    errors: list[str] = []
    foreign: list[str] = []
    context.on("page", lambda page: page.on("pageerror", lambda exc: errors.append(str(exc))))
    context.on(
        "request",
        lambda request: None if request.url.startswith(stack.url) else foreign.append(request.url),
    )
    return errors, foreign


def log_seqs(page: Page) -> list[int]:
    return page.locator("#log .log-line[data-seq]").evaluate_all(
        "lines => lines.map(line => Number(line.dataset.seq))"
    )


def follow_pipeline_to_success(page: Page, stack: Stack, pipeline_id: int) -> None:
    """On the pipeline page: the log streams to its final event and shows every stored line once."""
    expect(page).to_have_url(f"{stack.url}/ui/pipelines/{pipeline_id}")
    expect(page.locator("#log-state")).to_have_text(
        re.compile(r"live|finished: success"), timeout=30_000
    )
    expect(page.locator("#log-state")).to_have_text(
        re.compile("finished"), timeout=PIPELINE_TIMEOUT_MS
    )
    detail = httpx.get(f"{stack.url}/pipelines/{pipeline_id}").json()
    assert detail["status"] == "success", detail["error"]
    expect(page.locator("#log-state")).to_have_text("finished: success")
    stored = httpx.get(f"{stack.url}/pipelines/{pipeline_id}/logs").json()["lines"]
    assert log_seqs(page) == [line["seq"] for line in stored if line["stream"] != "status"]
    expect(page.locator("#log")).to_contain_text("accuracy=")
    expect(page.locator("#pipeline-status")).to_have_text("Succeeded")
    expect(page.locator('.phase[data-status="success"]')).to_have_count(5)
    # The notebook has no requirements.txt: its environment phase shows as skipped.
    environment = page.locator('.phase[data-phase="environment"]')
    expect(environment).to_have_attribute("data-status", "skipped")


def test_register_push_watch_predict_and_roll_back(
    browser: Browser, stack: Stack, git_remote: GitRemote, artifacts: Path
) -> None:
    model_name = f"pages-iris-{uuid.uuid4().hex[:8]}"
    sha = git_remote.commit_notebook(iris_notebook(model_name), "Add the iris notebook")
    context = browser.new_context(viewport={"width": 1280, "height": 900}, base_url=stack.url)
    errors, foreign = watch_errors(context, stack)
    page = context.new_page()

    # Add repository: a bad path is reported beside its field (after the token prompt).
    page.goto("/ui/repos/new")
    page.get_by_label("Repository URL").fill(git_remote.url)
    page.get_by_label("Notebook path").fill("../train.ipynb")
    page.get_by_role("button", name="Add repository").click()
    token_dialog = page.locator("#token-dialog")
    expect(token_dialog).to_be_visible()
    token_dialog.get_by_label("Token").fill(API_TOKEN)
    token_dialog.get_by_role("button", name="Save").click()
    expect(page.locator("#notebook_path-error")).to_contain_text("'..'")
    expect(page.get_by_label("Notebook path")).to_have_attribute("aria-invalid", "true")
    page.get_by_label("Notebook path").fill(git_remote.notebook_path)
    page.get_by_role("button", name="Add repository").click()
    expect(page.locator("#repo-created")).to_be_visible()
    webhook_url = page.locator("#created-webhook-url").input_value()
    secret = page.locator("#created-secret").input_value()
    assert webhook_url == f"{stack.url}/webhook/github"
    page.screenshot(path=artifacts / "repo-added.png", full_page=True)

    # Overview: the repo with its notebook and schedule; the push appears without a reload.
    admin = {"Authorization": f"Bearer {API_TOKEN}"}
    repo = httpx.get(f"{stack.url}/repos", headers=admin).json()[-1]  # the one just added
    scheduled = httpx.patch(
        f"{stack.url}/repos/{repo['id']}", json={"schedule": "0 3 * * *"}, headers=admin
    )
    assert scheduled.status_code == 200, scheduled.text
    page.goto("/ui/")
    expect(page.locator("#repos-list")).to_contain_text("remote/iris")
    notebook = page.locator(".repo-notebook", has_text=git_remote.notebook_path)
    expect(notebook).to_contain_text("schedule 0 3 * * * UTC, next ")
    worker_tile = page.locator("#health-list .health-item", has_text="Worker")
    # Health refreshes every 10 s; a worker just started may miss one ping window.
    expect(worker_tile).to_have_class(re.compile(r"\bup\b"), timeout=25_000)
    # At least this stack's worker (other test areas' workers may share the session Redis).
    expect(worker_tile).to_contain_text(re.compile(r"[1-9]\d* on pipelines"))
    push = delivery(
        push_payload(git_remote.url, after=sha, modified=[git_remote.notebook_path]), secret
    )
    accepted = httpx.post(webhook_url, content=push.body, headers=push.headers)
    assert accepted.status_code == 202, accepted.text
    first_id = accepted.json()["pipeline_id"]
    row = page.locator(f'tr[data-pipeline-id="{first_id}"]')
    expect(row).to_contain_text(sha[:7], timeout=10_000)
    page.screenshot(path=artifacts / "overview.png", full_page=True)

    # Pipeline page: the live log to the end, then Run again (same commit) → version 2.
    row.get_by_role("link", name=f"#{first_id}").click()
    follow_pipeline_to_success(page, stack, first_id)
    page.screenshot(path=artifacts / "pipeline.png", full_page=True)
    page.get_by_role("button", name="Run again").click()
    expect(page).not_to_have_url(f"{stack.url}/ui/pipelines/{first_id}")
    second_id = int(page.url.rsplit("/", 1)[-1])
    follow_pipeline_to_success(page, stack, second_id)

    # Model page: v2 serves; predict one row; roll back to v1 with the keyboard.
    page.get_by_role("link", name=re.compile(model_name)).click()
    expect(page.locator("#served-version")).to_have_text("v2", timeout=20_000)
    expect(page.locator("#versions-body tr")).to_have_count(2)
    # The chart plots each version's logged accuracy; the served one is marked, and the gate
    # line is the served version's gate (MIN_ACCURACY_THRESHOLD, logged by the worker).
    detail = httpx.get(f"{stack.url}/models/{model_name}").json()
    versions = detail["versions"]
    assert detail["gate"] == {"metric": "accuracy", "threshold": 0.5, "direction": "max"}
    expect(page.locator("#chart-metric")).to_have_value("accuracy")
    expect(page.locator("#chart .threshold-label")).to_have_text("gate ≥ 0.5")
    expect(page.locator("#chart svg circle title")).to_have_text(
        [
            f"v{v['version']}: accuracy {v['metrics']['accuracy']:.4g}"
            + (" (serving)" if v["version"] == "2" else "")
            for v in sorted(versions, key=lambda v: int(v["version"]))
        ]
    )
    # One labelled input per feature, named as the model was trained (from its signature).
    assert detail["feature_names"] == [
        "sepal length (cm)",
        "sepal width (cm)",
        "petal length (cm)",
        "petal width (cm)",
    ]
    for feature, value in zip(detail["feature_names"], IRIS_ROW, strict=True):
        page.get_by_label(feature, exact=True).fill(str(value))
    page.get_by_role("button", name="Predict").click()
    direct = httpx.post(
        f"{stack.model_server_url}/predict/{model_name}", json={"data": [IRIS_ROW]}
    ).json()
    expect(page.locator("#prediction-value")).to_have_text(str(direct["predictions"][0]))
    expect(page.locator(".proba li")).to_have_count(len(direct["classes"]))
    # Monitoring, from the prediction log: both predictions (page and direct) by v2, the direct
    # one under its request id; traffic and latency per version.
    expect(
        page.locator(f'#latest-body tr[data-request-id="{direct["request_id"]}"]')
    ).to_contain_text("v2", timeout=30_000)
    expect(page.locator('#traffic-body tr[data-version="2"] td').first).to_have_text("2")
    expect(page.locator('#traffic-body tr[data-version="2"] td').nth(3)).to_have_text("0%")
    page.get_by_role("button", name="Roll back to version 1").focus()
    page.keyboard.press("Enter")
    expect(page.locator("#confirm-dialog")).to_be_visible()
    # Cancel has the focus first (a stray Enter changes nothing); an optional reason, and Enter
    # in its field confirms.
    expect(page.locator("#confirm-cancel")).to_be_focused()
    page.get_by_label("Reason (optional").fill("v2 answers slower")
    page.keyboard.press("Enter")
    # The page re-reads the model after the call; each MLflow request now signs in (basic-auth).
    expect(page.locator("#served-version")).to_have_text("v1", timeout=20_000)
    wait_for(
        lambda: httpx.post(
            f"{stack.model_server_url}/predict/{model_name}", json={"data": [IRIS_ROW]}
        ).json()["model_version"]
        == "1",
        30,
        what="the model server to answer with version 1",
    )
    rolled_back = page.locator("#history li", has_text="Rolled back to v1")
    expect(rolled_back).to_contain_text("v2 answers slower", timeout=20_000)
    expect(page.locator("#replicas")).to_have_text("1 model server on v1.", timeout=30_000)
    page.screenshot(path=artifacts / "model.png", full_page=True)
    page.goto("/ui/models")
    expect(page.locator(f'[data-model="{model_name}"]')).to_contain_text(
        "Serving v1", timeout=20_000
    )
    page.screenshot(path=artifacts / "models.png", full_page=True)

    # Overview: each run's version, whether it serves now, and its metric against the version
    # before it.
    page.goto("/ui/")
    first_cell = page.locator(f'tr[data-pipeline-id="{first_id}"] .version-cell')
    second_cell = page.locator(f'tr[data-pipeline-id="{second_id}"] .version-cell')
    expect(first_cell).to_have_text("v1 serving")  # nothing before it to compare with
    one, two = (v["metrics"]["accuracy"] for v in sorted(versions, key=lambda v: v["version"]))
    sign = "+" if two > one else "\u2212" if two < one else "±"  # the page writes a minus sign
    expect(second_cell).to_have_text(re.compile(rf"^v2 not served accuracy {sign}[\d.e+-]+ vs v1$"))
    expect(second_cell.get_by_role("link", name="v2")).to_have_attribute(
        "href", f"/ui/models/{model_name}"
    )

    # Phone width: every page fits without sideways scrolling.
    phone = browser.new_context(viewport={"width": 390, "height": 844}, base_url=stack.url)
    phone_errors, phone_foreign = watch_errors(phone, stack)
    small = phone.new_page()
    for path, name, ready in [
        ("/ui/", "overview", f'tr[data-pipeline-id="{second_id}"]'),
        ("/ui/repos/new", "repo-new", "#repo-form"),
        (f"/ui/pipelines/{second_id}", "pipeline", "#log .log-line"),
        (f"/ui/models/{model_name}", "model", "#versions-body tr"),
    ]:
        small.goto(path)
        expect(small.locator(ready).first).to_be_visible()
        overflow = small.evaluate("document.documentElement.scrollWidth - window.innerWidth")
        assert overflow <= 0, f"{path} is {overflow}px wider than a phone"
        small.screenshot(path=artifacts / f"phone-{name}.png", full_page=True)

    assert errors + phone_errors == []
    assert foreign + phone_foreign == [], "every page loads only from the backend"
    phone.close()
    context.close()
