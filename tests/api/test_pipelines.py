"""Pipelines API: manual trigger, listing with pagination and filters, detail, cancel, retry."""

from __future__ import annotations

from datetime import timedelta

import redis
from sqlalchemy import update

from mlops_core.database import session_scope
from mlops_core.schema import Pipeline, PipelinePhase, utcnow
from mlops_core.states import PHASE_ORDER
from mlops_core.task_queue import CANCEL_CHANNEL
from tests.api.conftest import Api, queued_messages
from tests.support.processes import wait_for


def set_status(api: Api, pipeline_id: int, status: str) -> None:
    with session_scope(api.database_url) as session:
        session.execute(update(Pipeline).where(Pipeline.id == pipeline_id).values(status=status))


def test_trigger_queues_a_manual_run_of_the_branch_head(api: Api) -> None:
    repo = api.register(branch="prod", notebook_path="ml/train.ipynb")
    response = api.client.post(f"/repos/{repo['id']}/trigger")
    assert response.status_code == 202
    assert response.json()["status"] == "queued"
    row = api.pipeline(response.json()["pipeline_id"])
    assert (row.trigger, row.commit_sha, row.branch, row.notebook_path) == (
        "manual",
        None,  # the worker resolves the branch head when it fetches
        "prod",
        "ml/train.ipynb",
    )
    assert row.enqueued_at is not None
    assert queued_messages(api.settings.redis_url) == 1
    missing = api.client.post("/repos/424242/trigger")
    assert missing.status_code == 404
    assert missing.json()["detail"] == "repo 424242 not found"


def test_list_pages_newest_first_with_filters(api: Api) -> None:
    first, second = api.register(), api.register()
    ids = [
        api.client.post(f"/repos/{repo['id']}/trigger").json()["pipeline_id"]
        for repo in [first, second, first] * 8
    ]  # 24 pipelines, 16 of `first`
    set_status(api, ids[0], "failed")
    set_status(api, ids[3], "failed")

    pages = [api.client.get("/pipelines", params={"page": n, "size": 10}).json() for n in (1, 2, 3)]
    assert [page["total"] for page in pages] == [24, 24, 24]
    assert [(page["page"], page["size"]) for page in pages] == [(1, 10), (2, 10), (3, 10)]
    seen = [item["id"] for page in pages for item in page["items"]]
    assert seen == sorted(ids, reverse=True)
    assert api.client.get("/pipelines", params={"page": 4, "size": 10}).json()["items"] == []

    of_first = api.client.get("/pipelines", params={"repo_id": first["id"], "size": 100}).json()
    assert of_first["total"] == 16
    assert {item["repo_id"] for item in of_first["items"]} == {first["id"]}

    failed = api.client.get("/pipelines", params={"status": "failed"}).json()
    assert [item["id"] for item in failed["items"]] == [ids[3], ids[0]]
    both = api.client.get("/pipelines", params={"status": "failed", "repo_id": second["id"]}).json()
    assert [item["id"] for item in both["items"]] == []  # ids[0], ids[3] belong to `first`
    default = api.client.get("/pipelines").json()
    assert (default["page"], default["size"], len(default["items"])) == (1, 20, 20)

    # By trigger: a retry of a finished run is the only one not started by hand.
    retry = api.client.post(f"/pipelines/{ids[3]}/retry").json()["pipeline_id"]
    retries = api.client.get("/pipelines", params={"trigger": "retry"}).json()
    assert [item["id"] for item in retries["items"]] == [retry]
    manual = api.client.get("/pipelines", params={"trigger": "manual", "status": "failed"}).json()
    assert [item["id"] for item in manual["items"]] == [ids[3], ids[0]]


def test_list_rejects_bad_parameters_naming_them(api: Api) -> None:
    for params, name in [
        ({"status": "exploded"}, "status"),
        ({"size": 1000}, "size"),
        ({"page": 0}, "page"),
        ({"trigger": "cron"}, "trigger"),
    ]:
        response = api.client.get("/pipelines", params=params)
        assert response.status_code == 422
        assert response.json()["detail"][0]["loc"] == ["query", name]


def test_detail_shows_phases_with_durations(api: Api) -> None:
    repo = api.register()
    pipeline_id = api.client.post(f"/repos/{repo['id']}/trigger").json()["pipeline_id"]

    queued = api.client.get(f"/pipelines/{pipeline_id}").json()
    expected_fields = {
        "id", "repo_id", "status", "trigger", "commit_sha", "phases", "metrics", "model_name",
        "model_version", "mlflow_run_id", "error", "created_at", "started_at", "finished_at",
    }  # fmt: skip
    assert expected_fields <= set(queued)
    assert [(p["name"], p["status"]) for p in queued["phases"]] == [
        (phase.value, "pending") for phase in PHASE_ORDER
    ]

    start = utcnow()
    with session_scope(api.database_url) as session:
        row = session.get(Pipeline, pipeline_id)
        assert row is not None
        row.status, row.started_at = "failed", start
        row.finished_at, row.error = start + timedelta(seconds=3), "validate: missing tag"
        row.metrics = {"accuracy": 0.93}
        row.phases = [
            PipelinePhase(
                name="fetch",
                position=0,
                status="success",
                started_at=start,
                finished_at=start + timedelta(seconds=1.5),
            ),
            PipelinePhase(
                name="validate",
                position=1,
                status="failed",
                started_at=start + timedelta(seconds=1.5),
                finished_at=start + timedelta(seconds=3),
                error="missing tag mlops:training",
            ),
        ]
    detail = api.client.get(f"/pipelines/{pipeline_id}").json()
    assert detail["status"] == "failed"
    assert detail["duration_seconds"] == 3.0
    assert detail["metrics"] == {"accuracy": 0.93}
    assert [(p["name"], p["status"], p["duration_seconds"]) for p in detail["phases"]] == [
        ("fetch", "success", 1.5),
        ("validate", "failed", 1.5),
    ]
    assert detail["phases"][1]["error"] == "missing tag mlops:training"
    assert detail["started_at"].endswith(("Z", "+00:00"))
    assert api.client.get("/pipelines/987654").status_code == 404


def test_cancel_queued_running_and_finished(api: Api) -> None:
    repo = api.register()
    queued_id, running_id = (
        api.client.post(f"/repos/{repo['id']}/trigger").json()["pipeline_id"] for _ in range(2)
    )

    cancelled = api.client.post(f"/pipelines/{queued_id}/cancel")
    assert cancelled.status_code == 200
    assert cancelled.json() == {
        "pipeline_id": queued_id,
        "status": "cancelled",
        "cancel_requested": True,
    }
    row = api.pipeline(queued_id)
    assert (row.status, row.finished_at is not None) == ("cancelled", True)
    assert {p["status"] for p in api.client.get(f"/pipelines/{queued_id}").json()["phases"]} == {
        "cancelled"
    }

    set_status(api, running_id, "running")
    listener = redis.Redis.from_url(api.settings.redis_url).pubsub()
    listener.subscribe(CANCEL_CHANNEL)
    wait_for(lambda: listener.get_message(timeout=0.1), 5, what="subscribe confirmation")
    asked = api.client.post(f"/pipelines/{running_id}/cancel")
    assert asked.status_code == 202
    assert asked.json()["status"] == "running"
    assert api.pipeline(running_id).cancel_requested is True
    message = wait_for(lambda: listener.get_message(timeout=0.1), 5, what="cancel message")
    assert (message["channel"], message["data"]) == (
        CANCEL_CHANNEL.encode(),
        str(running_id).encode(),
    )
    listener.close()

    again = api.client.post(f"/pipelines/{queued_id}/cancel")
    assert again.status_code == 409
    assert "already finished (cancelled)" in again.json()["detail"]
    assert api.client.post("/pipelines/55555/cancel").status_code == 404


def test_retry_runs_a_finished_pipeline_again_at_the_same_commit(api: Api) -> None:
    repo = api.register()
    original = api.client.post(f"/repos/{repo['id']}/trigger").json()["pipeline_id"]
    assert api.client.post(f"/pipelines/{original}/retry").status_code == 409  # still queued
    with session_scope(api.database_url) as session:
        session.execute(
            update(Pipeline)
            .where(Pipeline.id == original)
            .values(
                status="failed",
                commit_sha="a" * 40,
                commit_message="Scale the features",
                commit_author="Octo Cat",
                error="execute: cell 4 (mlops:training) raised ValueError: bad\ncell 4, line 2: x",
            )
        )
    listed = api.client.get("/pipelines", params={"repo_id": repo["id"]}).json()["items"]
    assert [(item["id"], item["failed_phase"]) for item in listed] == [(original, "execute")]
    retried = api.client.post(f"/pipelines/{original}/retry")
    assert retried.status_code == 202
    row = api.pipeline(retried.json()["pipeline_id"])
    assert (row.trigger, row.commit_sha, row.status) == ("retry", "a" * 40, "queued")
    # The same commit, as people know it.
    assert (row.commit_message, row.commit_author) == ("Scale the features", "Octo Cat")
    detail = api.client.get(f"/pipelines/{row.id}").json()
    assert (detail["commit_message"], detail["failed_phase"], detail["failure"]) == (
        "Scale the features",
        None,
        None,
    )
