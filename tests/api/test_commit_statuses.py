"""Commit statuses: what each pipeline state says on GitHub, and how the backend delivers it.

The descriptions are a pure function of the pipeline row. Delivery is tested against a local
server speaking GitHub's REST API (tests/support/github_api.py): statuses in order, a status
endpoint that fails for a while (the pipeline is untouched, the status arrives later), GitHub's
rate limit, a token that may not post, no token at all, and two backends.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from backend.commit_statuses import CommitStatusReporter, describe, retry_delay
from backend.github_api import GitHubApi
from mlops_core import secrets_box
from mlops_core.database import session_scope
from mlops_core.schema import CommitStatus, Pipeline, PipelinePhase, Repo
from mlops_core.settings import Settings
from mlops_core.states import PHASE_ORDER, PhaseStatus
from tests.api.conftest import PUBLIC_BASE_URL, Api
from tests.support.github import random_sha
from tests.support.github_api import ADMIN_TOKEN, STATUS_ONLY_TOKEN, FakeGitHub
from tests.support.processes import wait_for

NOTEBOOK = "notebooks/train.ipynb"


Phases = dict[str, tuple[str, str | None]]


def pipeline_row(status: str, *, phases: Phases | None = None, **fields: Any) -> Pipeline:
    """A pipeline as the worker leaves it, not in any database."""
    rows = [
        PipelinePhase(name=name, position=i, status=status_error[0], error=status_error[1])
        for i, (name, status_error) in enumerate((phases or {}).items())
    ]
    return Pipeline(status=status, phases=rows, **fields)


SERVED = {"fetch": ("success", None), "deploy": ("success", None)}


@pytest.mark.parametrize(
    ("row", "expected"),
    [
        (pipeline_row("queued"), ("pending", "queued")),
        (
            pipeline_row(
                "running", phases={"fetch": ("success", None), "execute": ("running", None)}
            ),
            ("pending", "running: execute"),
        ),
        (pipeline_row("running"), ("pending", "starting")),
        (
            pipeline_row(
                "running", phases={"fetch": ("success", None), "validate": ("pending", None)}
            ),
            ("pending", "running: validate"),
        ),
        (
            pipeline_row(
                "success",
                phases=SERVED,
                model_version="3",
                deployed=True,
                metrics={"accuracy": 0.93333, "f1": 0.9},
                params={"gate": {"metric": "accuracy"}},
            ),
            ("success", "v3 served · accuracy 0.933"),
        ),
        (
            pipeline_row(
                "success",
                phases=SERVED,
                model_version="7",
                deployed=True,
                metrics={"rmse": 53.214, "accuracy": 0.1},
                params={"gate": {"metric": "rmse"}},
            ),
            ("success", "v7 served · rmse 53.2"),
        ),
        (
            pipeline_row(
                "success",
                phases={
                    "deploy": (
                        "skipped",
                        "gate accuracy >= 0.93 failed: accuracy = 0.9; iris version 3 is "
                        "registered, not served",
                    )
                },
                model_version="3",
                metrics={"accuracy": 0.9},
            ),
            ("success", "v3 registered, not served: gate accuracy >= 0.93 failed: accuracy = 0.9"),
        ),
        (
            pipeline_row(
                "success",
                phases={
                    "deploy": (
                        "skipped",
                        "AUTO_DEPLOY_ON_SUCCESS is off: iris version 2 is registered, not served",
                    )
                },
                model_version="2",
            ),
            ("success", "v2 registered, not served: AUTO_DEPLOY_ON_SUCCESS is off"),
        ),
        (
            pipeline_row(
                "failed",
                error="execute: cell 10 (mlops:evaluation) raised ValueError: bad input\n"
                "Traceback (most recent call last): ...",
            ),
            ("failure", "execute: cell 10 (mlops:evaluation) raised ValueError: bad input"),
        ),
        (
            pipeline_row("failed", error="validate: missing tag mlops:export " + "x" * 200),
            ("failure", "validate: missing tag mlops:export " + "x" * 104 + "…"),
        ),
        (
            pipeline_row("failed", error="deploy: worker lost during deploy (attempt 3 of 3)"),
            ("error", "deploy: worker lost during deploy (attempt 3 of 3)"),
        ),
        (
            pipeline_row("failed", error="register: MLflow unreachable at http://m:5000 for 120 s"),
            ("error", "register: MLflow unreachable at http://m:5000 for 120 s"),
        ),
        (
            pipeline_row("cancelled", error="cancelled before it started"),
            ("error", "cancelled before it started"),
        ),
        (
            pipeline_row("cancelled", error="attempt 2 no longer owns the pipeline"),
            ("error", "cancelled: attempt 2 no longer owns the pipeline"),
        ),
    ],
)
def test_what_each_pipeline_state_says_on_github(row: Pipeline, expected: tuple[str, str]) -> None:
    state, description = describe(row)
    assert (state, description) == expected
    assert len(description) <= 140


def test_retries_back_off_up_to_five_minutes() -> None:
    assert [retry_delay(n) for n in (1, 2, 3, 4)] == [1.0, 2.0, 4.0, 8.0]
    assert retry_delay(30) == 300.0


class Board:
    """Pipelines in a database, changed the way the worker changes them, and reporters."""

    def __init__(self, settings: Settings, github: FakeGitHub) -> None:
        self.settings = settings
        self.github = github
        self.reporters: list[CommitStatusReporter] = []

    def reporter(self) -> CommitStatusReporter:
        reporter = CommitStatusReporter(self.settings)
        self.reporters.append(reporter)
        return reporter

    def pipeline(
        self, *, token: str | None = ADMIN_TOKEN, url: str | None = None
    ) -> tuple[int, str, str]:
        """A queued pipeline at a new commit of a new repo: (id, owner/repo, sha)."""
        name = f"octo-org/iris-{uuid.uuid4().hex[:8]}"
        sha = random_sha()
        with session_scope(self.settings.database_url) as session:
            repo = Repo(
                github_url=url or self.github.repo_url(name),
                branch="main",
                notebook_path=NOTEBOOK,
                token_encrypted=secrets_box.encrypt(self.settings, token) if token else None,
                webhook_secret_encrypted=secrets_box.encrypt(self.settings, "s"),
            )
            session.add(repo)
            session.flush()
            row = Pipeline(
                repo_id=repo.id,
                repo_url=repo.github_url,
                branch="main",
                notebook_path=NOTEBOOK,
                status="queued",
                trigger="push",
                commit_sha=sha,
            )
            row.phases = [
                PipelinePhase(name=phase.value, position=i, status=PhaseStatus.PENDING)
                for i, phase in enumerate(PHASE_ORDER)
            ]
            session.add(row)
            session.flush()
            return row.id, name, sha

    def change(self, pipeline_id: int, *, running_phase: str | None = None, **fields: Any) -> None:
        with session_scope(self.settings.database_url) as session:
            row = session.get(Pipeline, pipeline_id)
            assert row is not None
            for key, value in fields.items():
                setattr(row, key, value)
            for phase in row.phases:
                if phase.name == running_phase:
                    phase.status = PhaseStatus.RUNNING

    def rows(self, pipeline_id: int) -> list[CommitStatus]:
        with session_scope(self.settings.database_url) as session:
            return list(
                session.scalars(
                    select(CommitStatus)
                    .where(CommitStatus.pipeline_id == pipeline_id)
                    .order_by(CommitStatus.position)
                )
            )

    def settled(self, pipeline_id: int) -> bool:
        with session_scope(self.settings.database_url) as session:
            row = session.get(Pipeline, pipeline_id)
            return row is not None and row.commit_status_settled_at is not None

    def posted(self, name: str, sha: str) -> list[tuple[str, str]]:
        return [(s["state"], s["description"]) for s in self.github.statuses_of(name, sha)]


@pytest.fixture
def board(make_settings: Callable[..., Settings], github: FakeGitHub) -> Any:
    settings = make_settings(
        github_api_url=github.api_url, allow_private_repo_hosts=True, github_token=None
    )
    made = Board(settings, github)
    yield made
    for reporter in made.reporters:
        reporter.close()


def test_statuses_follow_the_pipeline_in_order_and_stop_once_github_has_the_last(
    board: Board,
) -> None:
    reporter = board.reporter()
    pipeline_id, name, sha = board.pipeline()
    assert reporter.run_once() == 1
    board.change(pipeline_id, status="running", running_phase="execute")
    assert reporter.run_once() == 1
    assert reporter.run_once() == 0  # nothing changed: nothing posted
    board.change(
        pipeline_id,
        status="success",
        model_version="3",
        deployed=True,
        metrics={"accuracy": 0.9333},
    )
    assert reporter.run_once() == 1
    assert board.posted(name, sha) == [
        ("pending", "queued"),
        ("pending", "running: execute"),
        ("success", "v3 served · accuracy 0.933"),
    ]
    [status] = board.github.statuses_of(name, sha)[-1:]
    assert status["context"] == f"mlops/{NOTEBOOK}"
    assert status["target_url"] == f"{PUBLIC_BASE_URL}/ui/pipelines/{pipeline_id}"
    assert board.github.calls[-1].authorization == f"Bearer {ADMIN_TOKEN}"
    assert not board.settled(pipeline_id)  # the next pass checks nothing changed meanwhile
    assert reporter.run_once() == 0
    assert board.settled(pipeline_id)
    assert [row.delivery for row in board.rows(pipeline_id)] == ["posted"] * 3
    calls = len(board.github.calls)
    assert reporter.run_once() == 0
    assert len(board.github.calls) == calls


def test_a_failing_status_endpoint_never_touches_the_pipeline_and_the_last_status_arrives_later(
    board: Board,
) -> None:
    reporter = board.reporter()
    pipeline_id, name, sha = board.pipeline()
    board.github.fail_next(2, 502)
    assert reporter.run_once() == 0
    [waiting] = board.rows(pipeline_id)
    assert (waiting.delivery, waiting.attempts) == ("waiting", 1)
    assert waiting.last_error == "GitHub answered 502: Server Error"
    error = "execute: cell 4 (mlops:training) raised ValueError: no"
    board.change(pipeline_id, status="failed", error=error)
    assert reporter.run_once() == 0  # the failure status is wanted now, and fails once more

    def delivered() -> bool:
        reporter.run_once()
        return board.settled(pipeline_id)

    wait_for(delivered, 10, 0.2, "the failure status to reach GitHub")
    # The outdated pending status was never posted after GitHub came back.
    assert board.posted(name, sha) == [("failure", error)]
    assert [(row.state, row.delivery) for row in board.rows(pipeline_id)] == [
        ("pending", "superseded"),
        ("failure", "posted"),
    ]
    with session_scope(board.settings.database_url) as session:
        row = session.get(Pipeline, pipeline_id)
        assert row is not None and (row.status, row.error) == ("failed", error)


def test_githubs_rate_limit_pauses_posting_until_its_reset(board: Board) -> None:
    reporter = board.reporter()
    first, first_name, first_sha = board.pipeline()
    board.github.exhaust_rate_limit(2)
    assert reporter.run_once() == 0
    [row] = board.rows(first)
    assert row.last_error == "GitHub answered 403: API rate limit exceeded for user ID 1."
    _, second_name, second_sha = board.pipeline()
    calls = len(board.github.calls)
    assert reporter.run_once() == 0
    assert len(board.github.calls) == calls  # paused: no call until the reset time
    wait_for(lambda: reporter.run_once() or board.posted(second_name, second_sha), 10, 0.3, "reset")
    reporter.run_once()
    assert board.posted(first_name, first_sha) == [("pending", "queued")]
    assert board.posted(second_name, second_sha) == [("pending", "queued")]


def test_no_token_no_status_and_a_refusal_is_kept_with_githubs_message(board: Board) -> None:
    reporter = board.reporter()
    tokenless, _, _ = board.pipeline(token=None)
    local, _, _ = board.pipeline(url="file:///srv/repos/iris")
    refused, _, _ = board.pipeline(token="ghp_revoked")
    reporter.run_once()
    assert board.settled(tokenless) and board.settled(local)
    assert board.rows(tokenless) == board.rows(local) == []
    [row] = board.rows(refused)
    assert (row.delivery, row.last_error) == ("failed", "GitHub answered 401: Bad credentials")
    assert not board.settled(refused)  # still running: its next status is tried
    board.change(refused, status="cancelled", error="cancelled before it started")
    reporter.run_once()
    assert not board.settled(refused)  # settled by the next pass, which sees no change
    reporter.run_once()
    assert board.settled(refused)
    assert [call.status for call in board.github.calls] == [401, 401]

    _, name, sha = board.pipeline(token=STATUS_ONLY_TOKEN)
    reporter.run_once()
    assert board.posted(name, sha) == [("pending", "queued")]


def test_two_backends_post_each_status_once(board: Board) -> None:
    first, second = board.reporter(), board.reporter()
    pipeline_id, name, sha = board.pipeline()
    assert first.run_once() == 1
    assert second.run_once() == 0  # the lease is the first backend's
    board.change(pipeline_id, status="running", running_phase="fetch")
    assert second.run_once() == 0
    assert first.run_once() == 1
    assert board.posted(name, sha) == [("pending", "queued"), ("pending", "running: fetch")]


def test_the_backend_posts_statuses_and_shows_them_on_the_pipeline(
    make_api: Callable[..., Api], github: FakeGitHub
) -> None:
    api = make_api(
        github_api_url=github.api_url,
        allow_private_repo_hosts=True,
        commit_status_interval_seconds=0.2,
    )
    name = f"octo-org/iris-{uuid.uuid4().hex[:8]}"
    repo = api.register(github.repo_url(name), github_token=ADMIN_TOKEN)
    sha = random_sha()
    queued = api.client.post(f"/repos/{repo['id']}/trigger", json={"commit": sha})
    pipeline_id = queued.json()["pipeline_id"]
    wait_for(lambda: github.statuses_of(name, sha), 10, 0.1, "the pending status")
    api.client.post(f"/pipelines/{pipeline_id}/cancel")
    wait_for(lambda: len(github.statuses_of(name, sha)) == 2, 10, 0.1, "the cancel's status")
    assert [(s["state"], s["description"]) for s in github.statuses_of(name, sha)] == [
        ("pending", "queued"),
        ("error", "cancelled before it started"),
    ]

    def shown() -> list[dict[str, Any]] | None:
        statuses = api.client.get(f"/pipelines/{pipeline_id}").json()["commit_statuses"]
        return statuses if [s["delivery"] for s in statuses] == ["posted", "posted"] else None

    statuses = wait_for(shown, 10, 0.1, "the posted statuses on the pipeline")
    assert statuses[1]["state"] == "error"
    assert statuses[1]["target_url"] == f"{PUBLIC_BASE_URL}/ui/pipelines/{pipeline_id}"
    assert statuses[1]["context"] == f"mlops/{NOTEBOOK}"
    time.sleep(0.5)
    assert len(github.statuses_of(name, sha)) == 2


def test_a_pipeline_that_ends_while_its_pending_status_is_posted_still_gets_its_final_one(
    board: Board,
) -> None:
    pipeline_id, _, _ = board.pipeline()
    board.change(pipeline_id, status="running", running_phase="register")
    posted: list[str] = []

    def github(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        posted.append(body["state"])
        if body["state"] == "pending":  # the worker finishes meanwhile
            board.change(pipeline_id, status="success", model_version="1", deployed=True)
        return httpx.Response(201, json={"id": len(posted), **body})

    reporter = CommitStatusReporter(board.settings, api=GitHubApi(httpx.MockTransport(github)))
    board.reporters.append(reporter)
    for _ in range(3):
        reporter.run_once()
    assert posted == ["pending", "success"]
    assert board.settled(pipeline_id)
