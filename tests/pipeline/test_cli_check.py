"""`mlops check`: the validate phase's contract check from a terminal (no services)."""

from __future__ import annotations

import json
from pathlib import Path

import nbformat
import pytest
import yaml

from mlops_cli.main import main

REPO_ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((REPO_ROOT / "notebooks").glob("*.ipynb"))


def test_the_shipped_examples_pass(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", *map(str, EXAMPLES)]) == 0
    out = capsys.readouterr().out
    assert out.count(": ok: model ") == len(EXAMPLES)


def test_each_violation_is_printed_and_the_exit_status_is_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    notebook = nbformat.v4.new_notebook()
    notebook.cells = [
        nbformat.v4.new_code_cell(
            "%pip install seaborn\nimport seaborn", metadata={"tags": ["mlops:training"]}
        ),
    ]
    path = tmp_path / "broken.ipynb"
    nbformat.write(notebook, path)
    assert main(["check", str(path)]) == 1
    err = capsys.readouterr().err
    assert "breaks the notebook contract" in err
    assert "mlops:config" in err and "requirements.txt" in err

    assert main(["check", "--json", str(path), str(EXAMPLES[0])]) == 1
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [line["ok"] for line in lines] == [False, True]
    assert main(["check", str(tmp_path / "missing.ipynb")]) == 3


def test_the_pre_commit_hook_runs_the_check_on_notebooks() -> None:
    hooks = yaml.safe_load((REPO_ROOT / ".pre-commit-hooks.yaml").read_text())
    assert hooks[0]["entry"] == "mlops check" and hooks[0]["files"] == r"\.ipynb$"
