"""A pushed notebook whose training cell raises, read on its pipeline page in Chromium.

The page must explain the run without the reader digging through the log: the commit (message,
author, link to it on GitHub), the user's own line that raised shown in its cell's source
(pandas' frames below it, not instead of it), and "no metrics (failed at execute)". The log
shows the traceback once, numbers cells as the messages do, jumps to a phase, searches, and
downloads as text.
"""

from __future__ import annotations

import re
import uuid
from pathlib import Path

import httpx
from playwright.sync_api import Browser, Page, expect

from tests.pages.conftest import API_TOKEN, GitRemote, Stack, iris_notebook
from tests.support.github import commit_object, delivery, push_payload

PIPELINE_TIMEOUT_MS = 120_000
RAISING_LINE = 'weights = X_train["petal area"]'
COMMIT_MESSAGE = "Weight rows by petal area\n\nSmall classes should count more."


def failing_notebook(model_name: str):  # type: ignore[no-untyped-def]
    """The iris notebook whose training cell (cell 6) reads a column the data lacks, line 5."""
    notebook = iris_notebook(model_name)
    training = next(c for c in notebook.cells if "mlops:training" in c.metadata.get("tags", []))
    assert notebook.cells.index(training) == 5
    training.source = (
        "from sklearn.linear_model import LogisticRegression\n"
        "model = LogisticRegression(C=C, max_iter=500)\n"
        "for step in range(3):\n"
        '    print(f"training step {step + 1}/3")\n'
        f"{RAISING_LINE}\n"
        "model.fit(X_train, y_train, sample_weight=weights)"
    )
    return notebook


def push_failing_commit(stack: Stack, git_remote: GitRemote) -> tuple[int, str, str]:
    """Register the repo, push the failing notebook; (pipeline id, sha, GitHub commit URL)."""
    sha = git_remote.commit_notebook(
        failing_notebook(f"pages-failing-{uuid.uuid4().hex[:8]}"), COMMIT_MESSAGE
    )
    created = httpx.post(
        f"{stack.url}/repos",
        json={"github_url": git_remote.url, "create_webhook": False},
        headers={"Authorization": f"Bearer {API_TOKEN}"},
    )
    assert created.status_code == 201, created.text
    commit = commit_object(
        git_remote.url, sha, modified=[git_remote.notebook_path], message=COMMIT_MESSAGE
    )
    # As GitHub describes it: the commit's page on github.com.
    commit["url"] = commit_url = f"https://github.com/acme/iris/commit/{sha}"
    push = delivery(
        push_payload(git_remote.url, after=sha, commits=[commit]), created.json()["webhook_secret"]
    )
    accepted = httpx.post(f"{stack.url}/webhook/github", content=push.body, headers=push.headers)
    assert accepted.status_code == 202, accepted.text
    return accepted.json()["pipeline_id"], sha, commit_url


def log_texts(page: Page) -> list[str]:
    return page.locator("#log .log-line[data-seq] .log-text").all_text_contents()


def test_a_failing_cell_is_explained_on_its_page_and_its_log_can_be_searched_and_saved(
    browser: Browser, stack: Stack, git_remote: GitRemote, artifacts: Path, tmp_path: Path
) -> None:
    pipeline_id, sha, commit_url = push_failing_commit(stack, git_remote)
    # A short window, so the log scrolls and a jump has somewhere to go.
    page = browser.new_page(viewport={"width": 1280, "height": 700})
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(f"{stack.url}/ui/pipelines/{pipeline_id}")
    expect(page.locator("#log-state")).to_have_text("finished: failed", timeout=PIPELINE_TIMEOUT_MS)
    detail = httpx.get(f"{stack.url}/pipelines/{pipeline_id}").json()
    assert detail["failed_phase"] == "execute", detail["error"]

    # The commit, as the push described it.
    commit = page.locator("#commit-card")
    expect(commit.locator("#commit-subject")).to_have_text("Weight rows by petal area")
    expect(commit.locator("#commit-body")).to_have_text("Small classes should count more.")
    expect(commit.locator("#commit-meta")).to_contain_text(f"Octo Cat · {sha[:7]} on main")
    link = commit.get_by_role("link", name="View on GitHub ↗")
    expect(link).to_have_attribute("href", commit_url)

    # Where the user's code raised: cell 6, line 5, in its source; pandas' frames after it.
    failure = page.locator("#failure-card")
    expect(failure.locator("#failure-exception")).to_have_text("KeyError: 'petal area'")
    frame = failure.locator(".failure-frame")
    expect(frame).to_have_count(1)
    expect(frame.locator(".failure-where")).to_have_text("Cell 6, line 5 (mlops:training)")
    raised = frame.locator(".source-line.raised")
    expect(raised).to_have_attribute("data-line", "5")
    expect(raised.locator(".source-text")).to_have_text(RAISING_LINE)
    expect(frame.locator(".source-line")).to_have_count(6)  # lines 1-6: four before, one after
    failure.locator("#failure-library summary").click()
    expect(failure.locator("#failure-library-list li").first).to_contain_text("pandas/")
    expect(page.locator("#pipeline-error")).to_contain_text(f"cell 6, line 5: {RAISING_LINE}")
    expect(page.locator("#metrics-empty")).to_have_text("No metrics (failed at execute).")

    # The log: the traceback once, cells numbered as the messages number them.
    texts = log_texts(page)
    assert [t for t in texts if RAISING_LINE in t] == [f"--> 5 | {RAISING_LINE}"], texts
    library = [f for f in detail["failure"]["library_frames"] if f.startswith("pandas/")]
    assert library, detail["failure"]
    assert [t.strip() for t in texts if "pandas/" in t] == library
    started = page.locator("#log .log-line", has_text="▶ cell 6 (mlops:training) started")
    expect(started.locator(".log-cell")).to_have_text("[6]")
    for line in page.locator("#log .log-line", has_text=re.compile(r"^▶ cell \d+")).all():
        number = re.search(r"cell (\d+)", line.locator(".log-text").inner_text())
        assert number is not None
        expect(line.locator(".log-cell")).to_have_text(f"[{number.group(1)}]")
    page.screenshot(path=artifacts / "pipeline-failed.png", full_page=True)

    # Jump to a phase: its heading comes to the top of the log panel.
    log = page.locator("#log")
    for phase in ("execute", "fetch", "validate"):
        page.get_by_role("button", name=f"Jump to the {phase} phase's lines").click()
        heading = log.locator(f'.log-phase[data-phase="{phase}"]')
        expect(heading).to_be_focused()
        offset = heading.evaluate("h => h.offsetTop - h.parentElement.scrollTop")
        assert 0 <= offset <= 10, (phase, offset)

    # Search: every match highlighted, next/previous with the buttons and the keyboard.
    stored = httpx.get(f"{stack.url}/pipelines/{pipeline_id}/logs").json()["lines"]
    expected = sum(e["text"].lower().count("petal area") for e in stored if e["stream"] != "status")
    assert expected >= 3  # the source line, the exception, the outcome lines
    search = page.get_by_label("Search the log")
    search.fill("Petal Area")
    expect(log.locator("mark.log-match")).to_have_count(expected)
    count = page.locator("#log-search-count")
    expect(count).to_have_text(f"1 of {expected}")
    current = log.locator("mark.log-match.current")
    expect(current).to_have_count(1)
    first_line = current.evaluate("m => Number(m.closest('.log-line').dataset.seq)")
    search.press("Enter")
    expect(count).to_have_text(f"2 of {expected}")
    assert current.evaluate("m => Number(m.closest('.log-line').dataset.seq)") >= first_line
    page.get_by_role("button", name="Previous match").click()
    page.get_by_role("button", name="Previous match").click()
    expect(count).to_have_text(f"{expected} of {expected}")  # wraps around
    search.press("Shift+Enter")
    expect(count).to_have_text(f"{expected - 1} of {expected}")
    search.press("Escape")
    expect(log.locator("mark.log-match")).to_have_count(0)
    expect(log).to_contain_text(RAISING_LINE)  # the lines are whole again

    # Download: the stored log as text, each line with its phase and cell.
    with page.expect_download() as saving:
        page.get_by_role("button", name="Download log").click()
    saved = saving.value
    assert saved.suggested_filename == f"pipeline-{pipeline_id}.log"
    target = tmp_path / saved.suggested_filename
    saved.save_as(target)
    text = target.read_text()
    assert text == httpx.get(f"{stack.url}/pipelines/{pipeline_id}/logs.txt").text
    [raised_line] = [line for line in text.splitlines() if RAISING_LINE in line and "-->" in line]
    assert re.search(r" execute +cell 6 +error +--> 5 \| ", raised_line), raised_line
    assert errors == []
    page.close()
