"""POST /webhook/github with deliveries built and signed exactly as GitHub sends them."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlencode

import pytest
from sqlalchemy import select

from mlops_cli.github_delivery import signature_256
from mlops_core.database import session_scope
from mlops_core.schema import WebhookDelivery
from tests.api.conftest import NOTEBOOK, Api, github_url, queued_messages
from tests.support.github import (
    commit_object,
    delivery,
    ping_payload,
    push_payload,
    random_sha,
)


@pytest.fixture
def repo(api: Api) -> dict:  # type: ignore[type-arg]
    """A registered GitHub repo following `main` and the default notebook."""
    return api.register(github_url())


def push(repo: dict, **kwargs) -> dict:  # type: ignore[no-untyped-def,type-arg]
    kwargs.setdefault("modified", [NOTEBOOK])
    return push_payload(repo["github_url"], **kwargs)


def test_signed_push_queues_a_pipeline_at_the_pushed_commit(api: Api, repo: dict) -> None:  # type: ignore[type-arg]
    sha = random_sha()
    sent = delivery(push(repo, after=sha), repo["webhook_secret"])
    response = api.deliver(sent)

    assert response.status_code == 202, response.text
    body = response.json()
    assert body["status"] == "queued"
    row = api.pipeline(body["pipeline_id"])
    assert (row.repo_id, row.commit_sha, row.trigger, row.status) == (
        repo["id"],
        sha,
        "push",
        "queued",
    )
    assert row.delivery_id == sent.delivery_id
    assert row.enqueued_at is not None  # committed first, then sent to the broker
    assert queued_messages(api.settings.redis_url) == 1


def test_a_push_keeps_its_commits_message_author_and_link(api: Api, repo: dict) -> None:  # type: ignore[type-arg]
    sha, earlier = random_sha(), random_sha()
    commits = [
        commit_object(repo["github_url"], earlier, modified=[NOTEBOOK], message="First"),
        commit_object(repo["github_url"], sha, modified=[NOTEBOOK], message="Tune C\n\nWhy."),
    ]
    response = api.deliver(delivery(push(repo, after=sha, commits=commits), repo["webhook_secret"]))
    detail = api.client.get(f"/pipelines/{response.json()['pipeline_id']}").json()
    assert (detail["commit_message"], detail["commit_author"], detail["commit_url"]) == (
        "Tune C\n\nWhy.",
        "Octo Cat",
        f"{repo['github_url']}/commit/{sha}",
    )

    # A link is only ever an http(s) URL: the page puts it in an href.
    hostile = commit_object(repo["github_url"], sha, modified=[NOTEBOOK], message="x")
    hostile["url"] = "javascript:alert(document.cookie)"
    payload = push(repo, after=sha, commits=[hostile])
    payload["head_commit"] = None  # GitHub sends null for some pushes: `commits` still has it
    again = api.deliver(delivery(payload, repo["webhook_secret"]))
    row = api.pipeline(again.json()["pipeline_id"])
    assert (row.commit_message, row.commit_author, row.commit_url) == ("x", "Octo Cat", None)


@pytest.mark.parametrize("problem", ["wrong secret", "missing", "tampered body", "sha1 only"])
def test_bad_signatures_are_401_and_create_nothing(
    api: Api,
    repo: dict,
    problem: str,  # type: ignore[type-arg]
) -> None:
    payload = push(repo)
    if problem == "wrong secret":
        sent = delivery(payload, "not-the-secret")
    elif problem == "missing":
        sent = delivery(payload, None)
    else:
        sent = delivery(payload, repo["webhook_secret"])
    headers, body = dict(sent.headers), sent.body
    if problem == "tampered body":
        body = body.replace(b'"refs/heads/main"', b'"refs/heads/main" ', 1)
        assert body != sent.body
    if problem == "sha1 only":
        del headers["X-Hub-Signature-256"]

    response = api.client.post("/webhook/github", content=body, headers=headers)
    assert response.status_code == 401
    assert "X-Hub-Signature-256" in response.json()["detail"]
    assert api.pipelines() == []
    with session_scope(api.database_url) as session:
        assert session.scalars(select(WebhookDelivery)).all() == []


def test_signature_is_checked_over_the_raw_bytes(api: Api, repo: dict) -> None:  # type: ignore[type-arg]
    """Re-serialising the JSON would change the bytes; GitHub signs exactly what it sends."""
    body = json.dumps(push(repo), indent=2, ensure_ascii=False).encode()
    headers = dict(delivery(push(repo), None).headers)
    headers["X-Hub-Signature-256"] = signature_256(body, repo["webhook_secret"])
    assert api.client.post("/webhook/github", content=body, headers=headers).status_code == 202


def test_form_encoded_deliveries_are_accepted(api: Api, repo: dict) -> None:  # type: ignore[type-arg]
    payload = json.dumps(push(repo))
    body = urlencode({"payload": payload}).encode()
    headers = dict(delivery(push(repo), None).headers)
    headers["Content-Type"] = "application/x-www-form-urlencoded"
    headers["X-Hub-Signature-256"] = signature_256(body, repo["webhook_secret"])
    assert api.client.post("/webhook/github", content=body, headers=headers).status_code == 202


@pytest.mark.parametrize(
    ("body", "message"),
    [(b"{not json", "not valid JSON"), (b"[1, 2]", "JSON object"), (b"\xff\xfe", "not valid JSON")],
)
def test_invalid_json_is_400(api: Api, repo: dict, body: bytes, message: str) -> None:  # type: ignore[type-arg]
    headers = dict(delivery(push(repo), None).headers)
    headers["X-Hub-Signature-256"] = signature_256(body, repo["webhook_secret"])
    response = api.client.post("/webhook/github", content=body, headers=headers)
    assert response.status_code == 400
    assert message in response.json()["detail"]


def test_malformed_push_is_400_naming_the_field(api: Api, repo: dict) -> None:  # type: ignore[type-arg]
    payload = push(repo)
    payload["after"] = "not-a-sha"
    response = api.deliver(delivery(payload, repo["webhook_secret"]))
    assert response.status_code == 400
    assert "'after'" in response.json()["detail"]


def test_body_over_the_limit_is_413(make_api: Callable[..., Api]) -> None:
    api = make_api(webhook_max_body_bytes=4096)
    repo = api.register()
    big = push(repo, added=[f"data/file-{i}.csv" for i in range(400)])
    sent = delivery(big, repo["webhook_secret"])
    assert len(sent.body) > 4096

    declared = api.deliver(sent)
    assert declared.status_code == 413
    assert "4096" in declared.json()["detail"]

    def chunks():  # no Content-Length: the limit is enforced while reading
        for start in range(0, len(sent.body), 1000):
            yield sent.body[start : start + 1000]

    streamed = api.client.post("/webhook/github", content=chunks(), headers=sent.headers)
    assert streamed.status_code == 413
    assert api.pipelines() == []
    small = api.deliver(delivery(push(repo), repo["webhook_secret"]))
    assert small.status_code == 202


def test_ping_is_answered_and_checks_the_secret(api: Api, repo: dict) -> None:  # type: ignore[type-arg]
    ok = api.deliver(
        delivery(ping_payload(repo["github_url"]), repo["webhook_secret"], event="ping")
    )
    assert ok.status_code == 200
    assert ok.json()["status"] == "pong"
    assert ok.json()["repo_id"] == repo["id"]
    wrong = api.deliver(delivery(ping_payload(repo["github_url"]), "wrong", event="ping"))
    assert wrong.status_code == 401  # GitHub shows this on the hook page: the secret is wrong


def test_other_events_are_ignored_with_a_reason(api: Api, repo: dict) -> None:  # type: ignore[type-arg]
    payload = {"action": "opened", "repository": push(repo)["repository"]}
    response = api.deliver(delivery(payload, repo["webhook_secret"], event="issues"))
    assert response.status_code == 200
    assert response.json() == {
        "status": "ignored",
        "reason": "event 'issues' is not handled; only push events start pipelines",
    }
    assert api.pipelines() == []


def test_push_for_an_unregistered_repo_is_404(api: Api) -> None:
    payload = push_payload("https://github.com/someone/else", modified=[NOTEBOOK])
    response = api.deliver(delivery(payload, "whatever"))
    assert response.status_code == 404
    assert "https://github.com/someone/else is not registered" in response.json()["detail"]


def test_missing_event_header_is_400(api: Api, repo: dict) -> None:  # type: ignore[type-arg]
    sent = delivery(push(repo), repo["webhook_secret"])
    headers = {k: v for k, v in sent.headers.items() if k != "X-GitHub-Event"}
    response = api.client.post("/webhook/github", content=sent.body, headers=headers)
    assert response.status_code == 400
    assert "X-GitHub-Event" in response.json()["detail"]


@pytest.mark.parametrize("spelling", ["clone_url", "html_url", "ssh_url", "full_name"])
def test_repo_is_matched_by_any_repository_field(
    api: Api,
    spelling: str,  # type: ignore[type-arg]
) -> None:
    repo = api.register("git@github.com:Octo-Org/Churn.git")
    payload = push_payload("https://github.com/Octo-Org/Churn", modified=[NOTEBOOK])
    keep = payload["repository"][spelling]
    for field in ("clone_url", "html_url", "ssh_url", "git_url", "full_name"):
        payload["repository"][field] = None
    payload["repository"][spelling] = keep
    response = api.deliver(delivery(payload, repo["webhook_secret"]))
    assert response.status_code == 202, response.text
    assert api.pipeline(response.json()["pipeline_id"]).repo_id == repo["id"]


@pytest.mark.parametrize(
    ("kwargs", "reason"),
    [
        ({"branch": "develop"}, "push to branch 'develop'; this repo runs on branch 'main'"),
        ({"ref": "refs/tags/v1.0"}, "refs/tags/v1.0 is not a branch"),
        ({"deleted": True}, "branch 'main' was deleted"),
        (
            {"modified": ["README.md"], "added": ["docs/notebooks/train.ipynb"]},
            "no pushed commit touches a watched path",
        ),
    ],
)
def test_ignore_rules(api: Api, repo: dict, kwargs: dict, reason: str) -> None:  # type: ignore[type-arg]
    response = api.deliver(delivery(push(repo, **kwargs), repo["webhook_secret"]))
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "ignored"
    assert reason in response.json()["reason"]
    assert api.pipelines() == []
    assert queued_messages(api.settings.redis_url) == 0


@pytest.mark.parametrize(
    "case",
    ["force-push listing no commits", "forced", "20 listed commits", "notebook removed", "added"],
)
def test_pushes_that_may_change_the_notebook_run(api: Api, repo: dict, case: str) -> None:  # type: ignore[type-arg]
    url = repo["github_url"]
    kwargs: dict = {}  # type: ignore[type-arg]
    if case == "force-push listing no commits":
        kwargs = {"forced": True, "commits": []}
    elif case == "forced":
        kwargs = {"forced": True, "modified": ["README.md"]}
    elif case == "20 listed commits":  # GitHub's cap: the list may be cut
        kwargs = {
            "commits": [commit_object(url, random_sha(), modified=["x.py"]) for _ in range(20)]
        }
    elif case == "notebook removed":
        kwargs = {"modified": [], "removed": [NOTEBOOK]}
    else:
        kwargs = {"modified": [], "added": [NOTEBOOK]}
    response = api.deliver(delivery(push(repo, **kwargs), repo["webhook_secret"]))
    assert response.status_code == 202, response.text


def test_redelivery_answers_with_the_first_pipeline(api: Api, repo: dict) -> None:  # type: ignore[type-arg]
    first = delivery(push(repo), repo["webhook_secret"])
    accepted = api.deliver(first)
    again = api.deliver(first)  # GitHub's "Redeliver" resends the same GUID and body
    assert accepted.status_code == again.status_code == 202
    assert again.json()["pipeline_id"] == accepted.json()["pipeline_id"]
    assert len(api.pipelines()) == 1
    assert queued_messages(api.settings.redis_url) == 1

    ignored = delivery(push(repo, branch="develop"), repo["webhook_secret"])
    assert api.deliver(ignored).status_code == 200
    replay = api.deliver(ignored)
    assert replay.status_code == 200
    assert "develop" in replay.json()["reason"]


def test_concurrent_redeliveries_create_one_pipeline(api: Api, repo: dict) -> None:  # type: ignore[type-arg]
    sent = delivery(push(repo), repo["webhook_secret"])
    with ThreadPoolExecutor(8) as pool:
        responses = list(pool.map(lambda _: api.deliver(sent), range(8)))
    assert {r.status_code for r in responses} == {202}
    assert len({r.json()["pipeline_id"] for r in responses}) == 1
    assert len(api.pipelines()) == 1
    assert queued_messages(api.settings.redis_url) == 1


def test_metrics_count_deliveries_by_outcome(api: Api, repo: dict) -> None:  # type: ignore[type-arg]
    def count(outcome: str) -> float:
        text = api.client.get("/metrics").text
        prefix = f'mlops_webhook_deliveries_total{{outcome="{outcome}"}} '
        lines = [line for line in text.splitlines() if line.startswith(prefix)]
        return float(lines[0].removeprefix(prefix)) if lines else 0.0

    before = {name: count(name) for name in ("accepted", "ignored", "unauthorized")}
    api.deliver(delivery(push(repo), repo["webhook_secret"]))
    api.deliver(delivery(push(repo, branch="x"), repo["webhook_secret"]))
    api.deliver(delivery(push(repo), "wrong"))
    assert {name: count(name) - before[name] for name in before} == {
        "accepted": 1,
        "ignored": 1,
        "unauthorized": 1,
    }
    assert "mlops_pipelines_created_total" in api.client.get("/metrics").text


def test_a_delivery_without_an_id_is_accepted_once_per_body(api: Api, repo: dict) -> None:  # type: ignore[type-arg]
    """A hand-written sender (curl) sets no X-GitHub-Delivery: the body's hash stands in."""
    sent = delivery(push(repo), repo["webhook_secret"])
    headers = {k: v for k, v in sent.headers.items() if k != "X-GitHub-Delivery"}
    first = api.client.post("/webhook/github", content=sent.body, headers=headers)
    again = api.client.post("/webhook/github", content=sent.body, headers=headers)
    assert first.status_code == again.status_code == 202, first.text
    assert again.json()["pipeline_id"] == first.json()["pipeline_id"]
    row = api.pipeline(first.json()["pipeline_id"])
    assert row.delivery_id == "body-sha256:" + hashlib.sha256(sent.body).hexdigest()
    assert queued_messages(api.settings.redis_url) == 1

    other = delivery(push(repo), repo["webhook_secret"])  # another push: another body
    response = api.client.post(
        "/webhook/github",
        content=other.body,
        headers={k: v for k, v in other.headers.items() if k != "X-GitHub-Delivery"},
    )
    assert response.status_code == 202
    assert response.json()["pipeline_id"] != first.json()["pipeline_id"]
