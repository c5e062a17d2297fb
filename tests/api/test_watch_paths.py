"""Watched paths: a push changing a data file or helper beside the notebook retrains; one
changing only a README does not; the push rules say which path matched."""

from __future__ import annotations

import pytest

from backend.push_rules import judge_push
from backend.watch_paths import default_watch_paths, effective_watch_paths, matches
from tests.api.conftest import NOTEBOOK, Api, github_url
from tests.support.github import commit_object, delivery, push_payload, random_sha

URL = "https://github.com/octo-org/iris"


@pytest.mark.parametrize(
    ("glob", "path", "expected"),
    [
        ("notebooks/**", "notebooks/data/iris.csv", True),
        ("notebooks/**", "notebooks/iris.csv", True),
        ("notebooks/**", "notebooks-old/iris.csv", False),
        ("notebooks/", "notebooks/helpers/features.py", True),
        ("data/*.csv", "data/iris.csv", True),
        ("data/*.csv", "data/raw/iris.csv", False),
        ("**/*.csv", "iris.csv", True),
        ("**/*.csv", "a/b/c/iris.csv", True),
        ("**/*.csv", "a/b/c/iris.csv.bak", False),
        ("src/**/model.py", "src/model.py", True),
        ("src/**/model.py", "src/a/b/model.py", True),
        ("train-?.ipynb", "train-1.ipynb", True),
        ("train-?.ipynb", "train-10.ipynb", False),
        ("notebooks/train.ipynb", "Notebooks/train.ipynb", False),
        ("a+b/(x).py", "a+b/(x).py", True),
    ],
)
def test_globs(glob: str, path: str, expected: bool) -> None:
    assert matches(glob, path) is expected


def test_defaults_watch_the_notebook_its_requirements_and_its_folder() -> None:
    assert default_watch_paths("notebooks/train.ipynb") == [
        "notebooks/train.ipynb",
        "notebooks/requirements.txt",
        "notebooks/**",
    ]
    # At the root the folder would be the whole repository: a README change must not retrain.
    assert default_watch_paths("train.ipynb") == ["train.ipynb", "requirements.txt"]
    assert effective_watch_paths("nb/t.ipynb", ["data/**"]) == ["nb/t.ipynb", "data/**"]
    assert effective_watch_paths("nb/t.ipynb", ["nb/t.ipynb", "x"]) == ["nb/t.ipynb", "x"]


def judge(watch: list[str], **kwargs):  # type: ignore[no-untyped-def]
    return judge_push(push_payload(URL, **kwargs), branch="main", watch_paths=watch)


def test_the_verdict_names_the_path_that_matched_and_why_every_path_counted() -> None:
    watch = default_watch_paths(NOTEBOOK)
    assert judge(watch, added=["notebooks/wine.csv"]).matched == (
        "notebooks/wine.csv (watched: notebooks/**)"
    )
    assert judge(watch, modified=[NOTEBOOK]).matched == NOTEBOOK
    assert judge(watch, forced=True, modified=["README.md"]).matched == (
        "a forced push: any path may have changed"
    )
    many = [commit_object(URL, random_sha(), modified=["README.md"]) for _ in range(20)]
    assert "20 commits" in (judge(watch, commits=many).matched or "")
    ignored = judge(watch, modified=["README.md"], removed=["docs/old.md"])
    assert not ignored.runs
    assert ignored.ignore_reason == (
        "no pushed commit touches a watched path "
        "(notebooks/train.ipynb, notebooks/requirements.txt, notebooks/**)"
    )


def test_a_data_file_push_retrains_and_a_readme_push_does_not(api: Api) -> None:
    repo = api.register(github_url())
    assert repo["watch_paths"] == default_watch_paths(NOTEBOOK)
    data = api.deliver(
        delivery(
            push_payload(repo["github_url"], added=["notebooks/data/wine.csv"]),
            repo["webhook_secret"],
        )
    )
    assert data.status_code == 202, data.text
    assert data.json()["matched"] == "notebooks/data/wine.csv (watched: notebooks/**)"
    pipeline = api.client.get(f"/pipelines/{data.json()['pipeline_id']}").json()
    assert pipeline["trigger_detail"] == "notebooks/data/wine.csv (watched: notebooks/**)"

    readme = api.deliver(
        delivery(push_payload(repo["github_url"], modified=["README.md"]), repo["webhook_secret"])
    )
    assert readme.status_code == 200
    assert "no pushed commit touches a watched path" in readme.json()["reason"]
    assert len(api.pipelines()) == 1


def test_a_repo_sets_its_own_globs_and_the_notebook_always_counts(api: Api) -> None:
    repo = api.register(github_url(), watch_paths=["data/**", "src/*.py"])
    assert repo["watch_paths"] == [NOTEBOOK, "data/**", "src/*.py"]

    def push(path: str) -> int:
        payload = push_payload(repo["github_url"], modified=[path])
        return api.deliver(delivery(payload, repo["webhook_secret"])).status_code

    assert push("data/raw/new.parquet") == 202
    assert push(NOTEBOOK) == 202
    assert push("notebooks/helper.py") == 200  # the notebook's folder is not watched now

    changed = api.client.patch(f"/repos/{repo['id']}", json={"watch_paths": ["notebooks/"]})
    assert changed.status_code == 200, changed.text
    assert changed.json()["watch_paths"] == [NOTEBOOK, "notebooks/"]
    assert push("notebooks/helper.py") == 202
    back = api.client.patch(f"/repos/{repo['id']}", json={"watch_paths": None})
    assert back.json()["watch_paths"] == default_watch_paths(NOTEBOOK)


@pytest.mark.parametrize(
    ("glob", "message"),
    [("/etc/passwd", "relative"), ("data/../../x", ".."), ("data\\x", "'/'"), ("  ", "empty")],
)
def test_bad_globs_are_422(api: Api, glob: str, message: str) -> None:
    response = api.client.post("/repos", json={"github_url": github_url(), "watch_paths": [glob]})
    assert response.status_code == 422, response.text
    [error] = response.json()["detail"]
    assert error["loc"][:2] == ["body", "watch_paths"] and message in error["msg"]
