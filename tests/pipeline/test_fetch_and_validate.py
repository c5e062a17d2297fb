"""fetch and validate through the real worker: the pushed commit, and named failures."""

from __future__ import annotations

from mlflow import MlflowClient

from mlops_core.database import session_scope
from mlops_core.log_events import LogEvent
from mlops_core.schema import Pipeline
from tests.pipeline.conftest import (
    WorkerGroup,
    build_notebook,
    create_pipeline,
    log_events,
    small_notebook,
    unique_model_name,
    wait_finished,
)
from tests.support.processes import wait_for


def test_the_pushed_commit_runs_even_after_the_branch_moved_on(
    shared_worker: WorkerGroup, make_repo
) -> None:
    name = unique_model_name("pinned")
    repo = make_repo()
    pushed = repo.commit({"train.ipynb": small_notebook(name, training="print('RUN-OF-PUSHED')")})
    head = repo.commit(
        {"train.ipynb": small_notebook(name, training="print('RUN-OF-HEAD')")},
        message="Train on the head\n\nWith a body.",
    )
    pinned = create_pipeline(shared_worker.database_url, repo, commit_sha=pushed)
    manual = create_pipeline(shared_worker.database_url, repo, commit_sha=None)
    shared_worker.send(pinned)
    shared_worker.send(manual)
    pinned_state = wait_finished(shared_worker.database_url, pinned)
    manual_state = wait_finished(shared_worker.database_url, manual)

    assert pinned_state["status"] == "success", pinned_state
    pinned_log = " ".join(e.text for e in log_events(shared_worker.redis_url, pinned))
    assert "RUN-OF-PUSHED" in pinned_log and "RUN-OF-HEAD" not in pinned_log
    # A manual trigger (no commit) runs the branch head and records which commit that was.
    assert manual_state["status"] == "success", manual_state
    assert manual_state["commit_sha"] == head
    # No push described the commit: fetch read its message and author from git (a local
    # repository has no web page for it).
    with session_scope(shared_worker.database_url) as session:
        manual_row = session.get(Pipeline, manual)
        described = (manual_row.commit_message, manual_row.commit_author, manual_row.commit_url)
    assert described == ("Train on the head\n\nWith a body.", "t", None)
    client = MlflowClient(shared_worker.mlflow_uri)
    commits = {
        v.tags["pipeline_id"]: v.tags["commit"]
        for v in client.search_model_versions(f"name='{name}'")
    }
    assert commits == {str(pinned): pushed, str(manual): head}


def test_a_missing_repository_commit_branch_or_notebook_fails_fetch_saying_which(
    shared_worker: WorkerGroup, make_repo, tmp_path
) -> None:
    repo = make_repo()
    sha = repo.commit({"train.ipynb": small_notebook("never-registered")})
    db = shared_worker.database_url
    cases = {
        create_pipeline(db, repo_url=(tmp_path / "nowhere").as_uri(), commit_sha=sha): "repository",
        create_pipeline(db, repo, commit_sha="0" * 40): f"commit {'0' * 40} not found",
        create_pipeline(
            db, repo, commit_sha=None, branch="no-such-branch"
        ): "branch 'no-such-branch' not found",
        create_pipeline(
            db, repo, commit_sha=sha, notebook_path="nb/missing.ipynb"
        ): "notebook nb/missing.ipynb not found",
    }
    for pipeline_id in cases:
        shared_worker.send(pipeline_id)
    errors = []
    for pipeline_id, expected in cases.items():
        state = wait_finished(db, pipeline_id)
        assert state["status"] == "failed"
        status, error = state["phases"]["fetch"]
        assert status == "failed" and expected in error, error
        assert state["error"] == f"fetch: {error}"
        assert {s for n, (s, _) in state["phases"].items() if n != "fetch"} == {"skipped"}
        errors.append(error)
    assert "not found or not accessible" in errors[0]


def test_a_notebook_breaking_the_contract_fails_validate_naming_every_violation(
    shared_worker: WorkerGroup, make_repo
) -> None:
    repo = make_repo()
    notebook = build_notebook(
        [
            (("mlops:config",), 'import os\nMODEL_NAME = os.environ["X"]\nGATE_DIRECTION = "up"'),
            (("mlops:preprocessing",), "print('must not run')"),
            (("mlops:export",), "pass"),
        ]
    )
    sha = repo.commit({"train.ipynb": notebook})
    pipeline_id = create_pipeline(shared_worker.database_url, repo, commit_sha=sha)
    shared_worker.send(pipeline_id)
    state = wait_finished(shared_worker.database_url, pipeline_id)

    assert state["status"] == "failed"
    status, error = state["phases"]["validate"]
    assert status == "failed"
    for named in (
        "missing tag mlops:training",
        "MODEL_NAME must be a literal",
        "VERSION is not set",
        "GATE_DIRECTION",
    ):
        assert named in error, error
    assert state["phases"]["execute"][0] == "skipped"
    assert state["mlflow_run_id"] is None
    texts = [e.text for e in log_events(shared_worker.redis_url, pipeline_id)]
    assert not any("must not run" in t for t in texts)
    assert any(t.startswith("contract: missing tag mlops:training") for t in texts)


def test_a_cancel_requested_before_the_worker_starts_ends_cancelled_without_running(
    shared_worker: WorkerGroup, make_repo
) -> None:
    from mlops_core.database import session_scope
    from mlops_core.schema import Pipeline

    repo = make_repo()
    sha = repo.commit({"train.ipynb": small_notebook(unique_model_name("early-cancel"))})
    pipeline_id = create_pipeline(shared_worker.database_url, repo, commit_sha=sha)
    with session_scope(shared_worker.database_url) as session:
        session.get(Pipeline, pipeline_id).cancel_requested = True
    shared_worker.send(pipeline_id)
    state = wait_finished(shared_worker.database_url, pipeline_id)
    assert state["status"] == "cancelled"
    assert state["attempts"] == 0 and state["mlflow_run_id"] is None

    # The worker records the end, then announces it to the log: the line follows the row.
    def closed() -> list[LogEvent] | None:
        events = log_events(shared_worker.redis_url, pipeline_id)
        return events if events and events[-1].stream == "status" else None

    events = wait_for(closed, 30, 0.1, "the log's closing status line")
    assert events[-1].status == "cancelled"


def test_a_repo_token_reaches_the_git_server_as_a_header_and_nowhere_else(
    shared_worker: WorkerGroup, make_repo, tmp_path, tls_certificate
) -> None:
    import subprocess

    from mlops_core.secrets_box import encrypt
    from mlops_core.settings import Settings
    from tests.conftest import TEST_ENCRYPTION_KEY
    from tests.pipeline.conftest import WORKER_SECRETS
    from tests.pipeline.git_http_server import GitHttpServer, basic_authorization

    token = "ghs_repo_token_5f2d9c"
    repo = make_repo()
    sha = repo.commit({"train.ipynb": build_notebook([(("mlops:config",), "broken = (")])})
    served = tmp_path / "served"
    served.mkdir()
    subprocess.run(
        ["git", "clone", "--quiet", "--bare", str(repo.path), str(served / "r.git")], check=True
    )
    sealed = encrypt(Settings(encryption_key=TEST_ENCRYPTION_KEY), token)
    db = shared_worker.database_url
    with GitHttpServer(served, token, tls=tls_certificate) as server:
        url = f"{server.url}/r.git"
        with_token = create_pipeline(db, repo_url=url, commit_sha=sha, token_encrypted=sealed)
        without = create_pipeline(db, repo_url=url, commit_sha=sha)
        shared_worker.send(with_token)
        shared_worker.send(without)
        state = wait_finished(db, with_token)
        refused = wait_finished(db, without)

    # The token opened the repository: fetch succeeded and validate judged the notebook.
    assert state["phases"]["fetch"] == ("success", None), state
    assert state["phases"]["validate"][0] == "failed"
    assert server.expected in server.seen_authorization
    # The worker's GITHUB_TOKEN is for github.com (GITHUB_TOKEN_HOSTS): never sent here.
    worker_token = basic_authorization(WORKER_SECRETS["GITHUB_TOKEN"])
    assert worker_token not in server.seen_authorization
    assert refused["phases"]["fetch"][0] == "failed"
    assert "not found or not accessible" in refused["phases"]["fetch"][1]
    everything = " ".join(
        [str(state), str(refused)]
        + [e.text for p in (with_token, without) for e in log_events(shared_worker.redis_url, p)]
        + server.request_lines
    )
    assert token not in everything and server.expected.split()[1] not in everything
