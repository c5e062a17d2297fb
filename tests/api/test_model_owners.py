"""Model ownership: a model name belongs to the repository and notebook that first registered it.

The validate phase runs in this process (no Celery worker) against the app's database, SQLite
and PostgreSQL (TEST_DATABASE_URL), so a claim, a refusal and an admin's transfer through the
API are seen by the same rows the worker and the backend share.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import nbformat
import pytest
import redis
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from mlflow import MlflowClient
from sqlalchemy import delete

from mlops_core.database import engine_for, session_scope
from mlops_core.model_owners import (
    ModelSource,
    claim_model,
    get_ownership,
    ownership_conflict,
    transfer_model,
)
from mlops_core.schema import Base, ModelOwner, Pipeline, Repo, utcnow
from mlops_core.states import PipelineStatus
from tests.api.conftest import Api, github_url
from tests.support.phases import log_lines, phase_context
from worker.phases import validate
from worker.phases.context import PhaseFailed

NOTEBOOK = "notebooks/train.ipynb"
TOKEN = "owner-test-api-token"


def unique_name() -> str:
    return f"owned-{uuid.uuid4().hex[:8]}"


def contract_notebook(model_name: str) -> str:
    """The smallest notebook that keeps the contract (validate never runs it)."""
    notebook = nbformat.v4.new_notebook()
    for tag, source in (
        ("mlops:config", f'MODEL_NAME = "{model_name}"\nVERSION = "1"'),
        ("mlops:preprocessing", "X, y = [[0.0], [1.0]], [0, 1]"),
        ("mlops:training", "model = None"),
        ("mlops:export", "pass"),
    ):
        cell = nbformat.v4.new_code_cell(source)
        cell.metadata["tags"] = [tag]
        notebook.cells.append(cell)
    return nbformat.writes(notebook)


# --- who may publish under a name (pure) ----------------------------------------------------


def test_only_the_owning_repository_and_notebook_may_publish_under_a_name() -> None:
    owner = ModelSource("https://github.com/a/models", "nb/churn.ipynb", repo_id=1)
    assert ownership_conflict("churn", owner, owner) is None
    # The repo row is not the identity: the same repository registered again is the owner.
    again = ModelSource("https://github.com/a/models", "nb/churn.ipynb", repo_id=9)
    assert ownership_conflict("churn", owner, again) is None
    for other in (
        ModelSource("https://github.com/b/fork", "nb/churn.ipynb", repo_id=2),
        ModelSource("https://github.com/a/models", "nb/other.ipynb", repo_id=1),
    ):
        message = ownership_conflict("churn", owner, other)
        assert message is not None
        assert "https://github.com/a/models (notebook nb/churn.ipynb)" in message
        assert "POST /models/churn/owner" in message


# --- the table ---------------------------------------------------------------------------


def add_repo(database_url: str, url: str, notebook_path: str = NOTEBOOK) -> ModelSource:
    with session_scope(database_url) as session:
        repo = Repo(github_url=url, notebook_path=notebook_path, webhook_secret_encrypted="x")
        session.add(repo)
        session.flush()
        return ModelSource(url, notebook_path, repo.id)


def test_the_migration_creates_exactly_the_schema_the_code_declares(any_database_url: str) -> None:
    with engine_for(any_database_url).connect() as connection:
        diffs = compare_metadata(MigrationContext.configure(connection), Base.metadata)
    assert diffs == []


def test_of_concurrent_claims_exactly_one_wins(any_database_url: str) -> None:
    name = unique_name()
    claimants = [add_repo(any_database_url, github_url()) for _ in range(6)]
    results: list[tuple[ModelSource, bool]] = []
    start = threading.Barrier(len(claimants))

    def claim(claimant: ModelSource) -> None:
        start.wait()
        ownership, claimed = claim_model(any_database_url, name, claimant)
        results.append((ownership.owner, claimed))

    threads = [threading.Thread(target=claim, args=(c,)) for c in claimants]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert len(results) == len(claimants)
    winners = [owner for owner, claimed in results if claimed]
    assert len(winners) == 1
    assert {owner for owner, _ in results} == {winners[0]}  # every loser read the winner


def test_a_deleted_repo_keeps_its_name_reserved_until_it_is_registered_again(
    any_database_url: str,
) -> None:
    name = unique_name()
    url = github_url()
    first = add_repo(any_database_url, url)
    assert claim_model(any_database_url, name, first)[1]
    with session_scope(any_database_url) as session:
        session.execute(delete(Repo).where(Repo.id == first.repo_id))
    with session_scope(any_database_url) as session:
        kept = get_ownership(session, name)
    assert kept is not None and kept.owner == ModelSource(url, NOTEBOOK, None)

    intruder = add_repo(any_database_url, github_url())
    ownership, claimed = claim_model(any_database_url, name, intruder)
    assert not claimed and ownership_conflict(name, ownership.owner, intruder)

    again = add_repo(any_database_url, url)  # the same repository, registered again
    ownership, claimed = claim_model(any_database_url, name, again)
    assert not claimed and ownership.owner == again  # re-linked to the new repo row


def test_a_transfer_takes_a_claimed_name_or_one_nobody_owned(any_database_url: str) -> None:
    a = add_repo(any_database_url, github_url())
    b = add_repo(any_database_url, github_url())
    claimed_name, registered_name = unique_name(), unique_name()
    claim_model(any_database_url, claimed_name, a)
    assert transfer_model(any_database_url, claimed_name, b).owner == b
    assert transfer_model(any_database_url, registered_name, b).owner == b
    ownership, claimed = claim_model(any_database_url, claimed_name, a)
    assert not claimed and ownership.owner == b


# --- the validate phase and the API -------------------------------------------------------


@pytest.fixture
def api(make_api: Callable[..., Api]) -> Api:
    return make_api(api_token=TOKEN)


@pytest.fixture
def run_validate(
    api: Api, queue_redis_url: str, tmp_path: Path
) -> Iterator[Callable[[int, str], tuple[str | None, list[str]]]]:
    """Run validate for a new pipeline of repo `repo_id` whose notebook declares `model_name`.

    Returns the failure (None on success) and the phase's log.
    """
    client = redis.Redis.from_url(queue_redis_url)

    def run(repo_id: int, model_name: str) -> tuple[str | None, list[str]]:
        with session_scope(api.database_url) as session:
            repo = session.get(Repo, repo_id)
            assert repo is not None
            pipeline = Pipeline(
                repo_id=repo.id,
                repo_url=repo.github_url,
                branch=repo.branch,
                notebook_path=repo.notebook_path,
                status=PipelineStatus.RUNNING,
                enqueued_at=utcnow(),  # the backend's re-queue loop leaves it alone
            )
            session.add(pipeline)
            session.flush()
            pipeline_id, url, path = pipeline.id, repo.github_url, repo.notebook_path
        notebook_file = tmp_path / f"nb-{pipeline_id}.ipynb"
        notebook_file.write_text(contract_notebook(model_name))
        ctx = phase_context(
            api.settings,
            client,
            tmp_path / f"work-{pipeline_id}",
            pipeline_id,
            phase="validate",
            repo_url=url,
            notebook_path=path,
            notebook_file=notebook_file,
        )
        try:
            validate.run(ctx)
        except PhaseFailed as exc:
            return str(exc), log_lines(ctx)
        return None, log_lines(ctx)

    yield run
    client.close()


def test_a_second_repo_declaring_a_taken_name_fails_validate_until_the_name_is_transferred(
    api: Api, run_validate: Callable[[int, str], tuple[str | None, list[str]]]
) -> None:
    name = unique_name()
    owner = api.register(notebook_path=NOTEBOOK)
    other = api.register(notebook_path="ml/model.ipynb")

    error, log = run_validate(owner["id"], name)
    assert error is None
    assert f"model {name} now belongs to {owner['github_url']} (notebook {NOTEBOOK})" in log
    assert run_validate(owner["id"], name)[0] is None  # the owner's next push

    error, _ = run_validate(other["id"], name)
    assert error is not None
    assert f"model {name!r} belongs to {owner['github_url']} (notebook {NOTEBOOK})" in error

    body = {"repo_id": other["id"]}
    assert api.client.post(f"/models/{name}/owner", json=body).status_code == 401
    moved = api.client.post(f"/models/{name}/owner", json=body, headers=api.auth_headers())
    assert moved.status_code == 200, moved.text
    answer = moved.json()
    assert answer["owner"]["repo_id"] == other["id"]
    assert answer["owner"]["repo_url"] == other["github_url"]
    assert answer["owner"]["notebook_path"] == "ml/model.ipynb"
    assert answer["previous_owner"]["repo_url"] == owner["github_url"]

    assert run_validate(other["id"], name)[0] is None
    error, _ = run_validate(owner["id"], name)
    assert error is not None and other["github_url"] in error


def test_a_transfer_names_an_existing_repo_and_model(
    api: Api, run_validate: Callable[[int, str], tuple[str | None, list[str]]]
) -> None:
    name = unique_name()
    repo = api.register()
    assert run_validate(repo["id"], name)[0] is None
    headers = api.auth_headers()
    missing_repo = api.client.post(
        f"/models/{name}/owner", json={"repo_id": 999_999}, headers=headers
    )
    assert missing_repo.status_code == 404 and "repo 999999" in missing_repo.text
    assert api.client.post(f"/models/{name}/owner", json={}, headers=headers).status_code == 422

    # Of a repository running several notebooks, the transfer names which one gets the name.
    added = api.client.post(
        f"/repos/{repo['id']}/notebooks", json={"notebook_path": "b.ipynb"}, headers=headers
    )
    assert added.status_code == 201, added.text
    body = {"repo_id": repo["id"], "notebook_path": "b.ipynb"}
    moved = api.client.post(f"/models/{name}/owner", json=body, headers=headers)
    assert moved.status_code == 200, moved.text
    assert moved.json()["owner"]["notebook_path"] == "b.ipynb"
    body["notebook_path"] = "c.ipynb"
    unknown = api.client.post(f"/models/{name}/owner", json=body, headers=headers)
    assert unknown.status_code == 404
    assert "notebook_path: c.ipynb is not a notebook of repo" in unknown.json()["detail"]


def test_the_models_api_shows_the_owner_and_refuses_an_unknown_model(
    make_api: Callable[..., Api], mlflow_uri: str
) -> None:
    api = make_api(api_token=TOKEN, mlflow_tracking_uri=mlflow_uri)
    headers = api.auth_headers()
    repo = api.register()
    unknown = unique_name()
    refused = api.client.post(
        f"/models/{unknown}/owner", json={"repo_id": repo["id"]}, headers=headers
    )
    assert refused.status_code == 404 and "not registered" in refused.text

    # Registered before ownership existed: no owner until the first use or a transfer.
    name = unique_name()
    MlflowClient(tracking_uri=mlflow_uri, registry_uri=mlflow_uri).create_registered_model(name)
    assert api.client.get(f"/models/{name}").json()["owner"] is None
    moved = api.client.post(f"/models/{name}/owner", json={"repo_id": repo["id"]}, headers=headers)
    assert moved.status_code == 200, moved.text
    assert moved.json()["previous_owner"] is None
    shown = api.client.get(f"/models/{name}").json()["owner"]
    assert shown["repo_id"] == repo["id"] and shown["repo_url"] == repo["github_url"]
    assert shown["notebook_path"] == repo["notebook_path"] and shown["owned_since"]
    with session_scope(api.database_url) as session:
        assert session.get(ModelOwner, name) is not None
