"""Several notebooks per repository: registering them, a push running each notebook it touched
(exactly once per delivery), triggers naming one, and the single-notebook API kept as it was."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from sqlalchemy import select, text

from mlops_core import secrets_box
from mlops_core.database import alembic_config, engine_for, session_scope
from mlops_core.schema import Notebook, Pipeline, Repo
from tests.api.conftest import NOTEBOOK, Api, github_url
from tests.support.github import delivery, push_payload

IRIS = "iris/train.ipynb"
WINE = "wine/train.ipynb"


def register_two(api: Api) -> dict:
    return api.register(
        github_url(),
        notebooks=[
            {"notebook_path": IRIS},
            {"notebook_path": WINE, "watch_paths": ["data/wine/**"], "schedule": "@daily"},
        ],
    )


def test_a_repo_registers_several_notebooks_each_with_its_own_paths_and_schedule(
    api: Api,
) -> None:
    repo = register_two(api)
    assert repo["notebook_path"] == IRIS  # the single-notebook fields are the first one's
    assert repo["watch_paths"] == [IRIS, "iris/requirements.txt", "iris/**"]
    assert repo["schedule"] is None
    iris, wine = repo["notebooks"]
    assert (iris["notebook_path"], iris["schedule"], iris["next_run_at"]) == (IRIS, None, None)
    assert wine["notebook_path"] == WINE
    assert wine["watch_paths"] == [WINE, "data/wine/**"]
    assert wine["schedule"] == "@daily" and wine["next_run_at"].endswith("T00:00:00Z")
    listed = api.client.get("/repos").json()
    assert [n["notebook_path"] for n in listed[0]["notebooks"]] == [IRIS, WINE]


def test_a_push_runs_each_notebook_it_touched_once_per_delivery(api: Api) -> None:
    repo = register_two(api)
    secret = repo["webhook_secret"]
    both = delivery(
        push_payload(repo["github_url"], modified=["iris/train.ipynb", "data/wine/red.csv"]),
        secret,
    )
    answer = api.deliver(both)
    assert answer.status_code == 202, answer.text
    queued = answer.json()["pipelines"]
    assert [(q["notebook_path"], q["matched"]) for q in queued] == [
        (IRIS, IRIS),
        (WINE, "data/wine/red.csv (watched: data/wine/**)"),
    ]
    assert answer.json()["pipeline_id"] == queued[0]["pipeline_id"]
    rows = api.pipelines()
    assert [(p.notebook_path, p.delivery_id, p.trigger) for p in rows] == [
        (IRIS, both.delivery_id, "push"),
        (WINE, both.delivery_id, "push"),
    ]

    again = api.deliver(both)  # GitHub redelivers: the same two pipelines, no new one
    assert again.status_code == 202
    assert [q["pipeline_id"] for q in again.json()["pipelines"]] == [p.id for p in rows]
    assert len(api.pipelines()) == 2

    wine_only = api.deliver(
        delivery(push_payload(repo["github_url"], added=["data/wine/white.csv"]), secret)
    )
    assert [q["notebook_path"] for q in wine_only.json()["pipelines"]] == [WINE]

    readme = api.deliver(delivery(push_payload(repo["github_url"], modified=["README.md"]), secret))
    assert readme.status_code == 200
    assert readme.json()["reason"] == (
        "no pushed commit touches a watched path of any notebook (iris/train.ipynb: "
        "iris/train.ipynb, iris/requirements.txt, iris/**; wine/train.ipynb: wine/train.ipynb, "
        "data/wine/**)"
    )
    assert len(api.pipelines()) == 3


def test_notebooks_are_added_changed_and_removed_under_a_repo(api: Api) -> None:
    repo = api.register(github_url())
    base = f"/repos/{repo['id']}/notebooks"
    added = api.client.post(base, json={"notebook_path": WINE, "schedule": "0 3 * * *"})
    assert added.status_code == 201, added.text
    assert added.json()["schedule"] == "0 3 * * *"
    duplicate = api.client.post(base, json={"notebook_path": WINE})
    assert duplicate.status_code == 409
    assert f"{WINE} is already registered for repo {repo['id']}" in duplicate.json()["detail"]

    wine_id = added.json()["id"]
    changed = api.client.patch(f"{base}/{wine_id}", json={"watch_paths": ["data/**"]}).json()
    assert changed["watch_paths"] == [WINE, "data/**"]
    assert changed["schedule"] == "0 3 * * *"  # not given: unchanged
    assert api.client.patch(f"{base}/999999", json={"schedule": None}).status_code == 404

    first_id = repo["notebooks"][0]["id"]
    assert api.client.delete(f"{base}/{first_id}").status_code == 204
    shown = api.client.get(f"/repos/{repo['id']}").json()
    assert shown["notebook_path"] == WINE  # the next one became the repo's own
    assert [n["notebook_path"] for n in shown["notebooks"]] == [WINE]
    last = api.client.delete(f"{base}/{wine_id}")
    assert last.status_code == 409
    assert "remove the repo instead" in last.json()["detail"]


def test_a_trigger_names_the_notebook_to_run(api: Api) -> None:
    repo = register_two(api)
    url = f"/repos/{repo['id']}/trigger"
    default = api.client.post(url).json()
    wine = api.client.post(url, json={"notebook_path": WINE}).json()
    assert [q["notebook_path"] for q in default["pipelines"] + wine["pipelines"]] == [IRIS, WINE]
    assert [p.notebook_path for p in api.pipelines()] == [IRIS, WINE]
    unknown = api.client.post(url, json={"notebook_path": "other/train.ipynb"})
    assert unknown.status_code == 422
    assert unknown.json()["detail"][0]["loc"] == ["body", "notebook_path"]
    assert "is not a notebook of repo" in unknown.json()["detail"][0]["msg"]


def test_one_form_or_the_other(api: Api) -> None:
    both = api.client.post(
        "/repos",
        json={
            "github_url": github_url(),
            "notebook_path": NOTEBOOK,
            "notebooks": [{"notebook_path": IRIS}],
        },
    )
    assert both.status_code == 422
    assert "give either notebooks or notebook_path" in both.json()["detail"][0]["msg"]
    twice = api.client.post(
        "/repos",
        json={
            "github_url": github_url(),
            "notebooks": [{"notebook_path": IRIS}, {"notebook_path": IRIS}],
        },
    )
    assert twice.status_code == 422
    assert f"notebooks lists {IRIS} more than once" in twice.json()["detail"][0]["msg"]
    single = api.register(github_url(), notebook_path=NOTEBOOK, schedule="@hourly")
    assert [(n["notebook_path"], n["schedule"]) for n in single["notebooks"]] == [
        (NOTEBOOK, "@hourly")
    ]


def test_the_migration_gives_every_existing_repo_its_notebook(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'old.db'}"
    config = alembic_config(url)
    command.upgrade(config, "0007")
    with engine_for(url).begin() as conn:
        conn.execute(
            text(
                "INSERT INTO repos (github_url, branch, notebook_path, webhook_secret_encrypted, "
                "created_at, watch_paths) VALUES ('https://github.com/o/r', 'main', "
                "'nb/train.ipynb', 'x', '2026-12-01 09:00:00', '[\"data/**\"]')"
            )
        )
        conn.execute(
            text(
                "INSERT INTO pipelines (repo_id, repo_url, branch, notebook_path, status, trigger, "
                "attempts, cancel_requested, metrics, params, deployed, created_at) VALUES (1, "
                "'https://github.com/o/r', 'main', 'nb/train.ipynb', 'success', 'push', 1, false, "
                "'{}', '{}', false, '2026-12-01 09:00:00')"
            )
        )
    command.upgrade(config, "head")
    with session_scope(url) as session:
        [notebook] = session.scalars(select(Notebook)).all()
        assert (notebook.notebook_path, notebook.watch_paths) == ("nb/train.ipynb", ["data/**"])
        assert notebook.repo.notebook_path == "nb/train.ipynb"
        # The repos table changed in place: its pipelines still belong to it.
        assert session.scalars(select(Pipeline.repo_id)).all() == [notebook.repo_id]
    command.downgrade(config, "0007")
    with engine_for(url).connect() as conn:
        assert conn.execute(text("SELECT watch_paths FROM repos")).scalar() == '["data/**"]'
    engine_for(url).dispose()


def test_a_repo_row_written_around_the_api_is_shown_and_gets_its_notebook_on_change(
    api: Api,
) -> None:
    """Scripts and fixtures insert repo rows directly: no notebook row comes with them."""
    url = github_url()
    with session_scope(api.database_url) as session:
        repo = Repo(
            github_url=url,
            branch="main",
            notebook_path=NOTEBOOK,
            webhook_secret_encrypted=secrets_box.encrypt(api.settings, "s3cret"),
        )
        session.add(repo)
        session.flush()
        repo_id = repo.id
    shown = api.client.get(f"/repos/{repo_id}").json()
    assert (shown["notebook_path"], shown["notebooks"]) == (NOTEBOOK, [])
    assert shown["watch_paths"] == [NOTEBOOK, "notebooks/requirements.txt", "notebooks/**"]
    ignored = api.deliver(delivery(push_payload(url, modified=[NOTEBOOK]), "s3cret"))
    assert ignored.status_code == 200
    assert (
        ignored.json()["reason"]
        == f"repo {repo_id} runs no notebook: add one (POST /repos/{repo_id}/notebooks)"
    )
    changed = api.client.patch(f"/repos/{repo_id}", json={"schedule": "@hourly"}).json()
    assert [(n["notebook_path"], n["schedule"]) for n in changed["notebooks"]] == [
        (NOTEBOOK, "@hourly")
    ]
