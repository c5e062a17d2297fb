"""POST /repos/{id}/trigger at any commit with papermill parameters, checked before they run."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import nbformat
import pytest

from mlops_cli.main import main as cli_main
from mlops_core.run_parameters import overridden_by_later_cells, validate_parameters
from tests.api.conftest import Api, LiveBackend, github_url
from tests.support.github import random_sha


def notebook(*cells: tuple[tuple[str, ...], str]) -> nbformat.NotebookNode:
    book = nbformat.v4.new_notebook()
    for tags, source in cells:
        cell = nbformat.v4.new_code_cell(source)
        if tags:
            cell.metadata["tags"] = list(tags)
        book.cells.append(cell)
    return book


CONFIG = (("mlops:config",), 'MODEL_NAME = "iris"\nVERSION = "1"\nN_ESTIMATORS = 100')
PARAMETERS = (("parameters",), 'MODEL_OUTPUT_PATH = "model.joblib"\nMAX_DEPTH = 5')


def test_a_trigger_runs_the_commit_it_names_with_its_parameters_and_a_retry_keeps_both(
    api: Api,
) -> None:
    repo = api.register()
    sha = random_sha()
    body = {"commit": sha.upper(), "parameters": {"N_ESTIMATORS": 300, "LABELS": ["a", "b"]}}
    response = api.client.post(f"/repos/{repo['id']}/trigger", json=body)
    assert response.status_code == 202, response.text
    pipeline = api.client.get(f"/pipelines/{response.json()['pipeline_id']}").json()
    assert (pipeline["commit_sha"], pipeline["trigger"]) == (sha, "manual")
    assert pipeline["parameters"] == {"N_ESTIMATORS": 300, "LABELS": ["a", "b"]}

    api.client.post(f"/pipelines/{pipeline['id']}/cancel")
    retried = api.client.post(f"/pipelines/{pipeline['id']}/retry")
    assert retried.status_code == 202
    again = api.client.get(f"/pipelines/{retried.json()['pipeline_id']}").json()
    assert (again["commit_sha"], again["parameters"]) == (sha, pipeline["parameters"])

    plain = api.client.post(f"/repos/{repo['id']}/trigger")
    head = api.client.get(f"/pipelines/{plain.json()['pipeline_id']}").json()
    assert (head["commit_sha"], head["parameters"]) == (None, {})


@pytest.mark.parametrize(
    ("body", "field", "message"),
    [
        ({"commit": "abc1234"}, "commit", "not a full commit sha"),
        ({"commit": "z" * 40}, "commit", "not a full commit sha"),
        ({"parameters": {"MODEL_NAME": "other"}}, "parameters", "mlops:config"),
        ({"parameters": {"MODEL_OUTPUT_PATH": "/tmp/x"}}, "parameters", "injects it itself"),
        ({"parameters": {"max-depth": 3}}, "parameters", "not a Python identifier"),
        ({"parameters": {"class": 3}}, "parameters", "not a Python identifier"),
        ({"notebook_path": "other.ipynb"}, "notebook_path", "is not a notebook of repo"),
        ({"notebook_path": "../x.ipynb"}, "notebook_path", "must not contain '..'"),
    ],
)
def test_bad_triggers_are_422_naming_the_field(
    api: Api,
    body: dict,
    field: str,
    message: str,  # type: ignore[type-arg]
) -> None:
    repo = api.register()
    response = api.client.post(f"/repos/{repo['id']}/trigger", json=body)
    assert response.status_code == 422, response.text
    [error] = response.json()["detail"]
    assert error["loc"][:2] == ["body", field] and message in error["msg"]
    assert api.pipelines() == []


def test_values_must_become_python_literals() -> None:
    with pytest.raises(ValueError, match="not a finite number"):
        validate_parameters({"C": float("nan")})
    with pytest.raises(ValueError, match="nested deeper"):
        validate_parameters({"C": [[[[[[[1]]]]]]]})
    with pytest.raises(ValueError, match="at most 50"):
        validate_parameters({f"P{i}": i for i in range(51)})
    with pytest.raises(ValueError, match="bytes as JSON"):
        validate_parameters({"TEXT": "x" * 20_000})
    assert validate_parameters({"C": 0.5, "NAME": None, "GRID": {"a": [1, 2.5, True]}})


def test_parameters_below_the_parameters_cell_take_effect() -> None:
    """Seed 003's layout (config, then parameters): papermill injects after both."""
    book = notebook(CONFIG, PARAMETERS, (("mlops:training",), "N_ESTIMATORS = int(N_ESTIMATORS)"))
    assert overridden_by_later_cells(book, ["N_ESTIMATORS", "MAX_DEPTH"]) == []


def test_a_later_config_cell_or_a_missing_parameters_cell_would_undo_a_parameter() -> None:
    later = notebook(PARAMETERS, ((), "N_ESTIMATORS = 1"), CONFIG)  # untagged: skipped
    assert overridden_by_later_cells(later, ["N_ESTIMATORS", "MAX_DEPTH"]) == [
        "parameter N_ESTIMATORS would not take effect: cell 3 (mlops:config) sets it after the "
        "parameters are injected (papermill injects them below cell 1, tagged parameters: "
        "define N_ESTIMATORS in cell 1 instead, or move that cell below cell 3 (mlops:config))"
    ]
    missing = notebook(CONFIG, (("mlops:training",), "model = N_ESTIMATORS"))
    [problem] = overridden_by_later_cells(missing, ["N_ESTIMATORS"])
    assert "no cell tagged parameters" in problem and "below cell 1 (mlops:config)" in problem
    untagged = notebook(PARAMETERS, ((), "N_ESTIMATORS = 10"))
    assert overridden_by_later_cells(untagged, ["N_ESTIMATORS"]) == []


def test_mlops_trigger_sends_the_commit_and_parameters(
    start_backend: Callable[..., LiveBackend], any_database_url: str, queue_redis_url: str
) -> None:
    backend = start_backend(DATABASE_URL=any_database_url, REDIS_URL=queue_redis_url)
    repo = httpx.post(f"{backend.url}/repos", json={"github_url": github_url()}, timeout=10)
    sha = random_sha()
    args = ["trigger", str(repo.json()["id"]), "--api", backend.url, "--commit", sha]
    args += ["--param", "N_ESTIMATORS=300", "--param", "KERNEL=rbf", "--param", "GRID=[1, 2]"]
    assert cli_main(args) == 0
    [listed] = httpx.get(f"{backend.url}/pipelines", timeout=10).json()["items"]
    assert listed["commit_sha"] == sha
    assert listed["parameters"] == {"N_ESTIMATORS": 300, "KERNEL": "rbf", "GRID": [1, 2]}
    assert cli_main(["trigger", "1", "--param", "no-equals-sign"]) == 64
