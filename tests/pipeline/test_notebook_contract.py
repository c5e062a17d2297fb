"""The notebook contract, checked without a kernel: every violation is named."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import nbformat
import pytest

from mlops_core.notebook_contract import (
    SKIP_TAG,
    ContractViolation,
    GateSettings,
    check_notebook,
    prepare_for_execution,
    read_notebook,
    skipped_cells_defining,
    strip_execution_marks,
)
from tests.pipeline.conftest import NOTEBOOKS, build_notebook

CONFIG = 'MODEL_NAME = "churn"\nVERSION = "1.2"\nN_TREES = 50'
BODY = [
    (("mlops:preprocessing",), "x = 1"),
    (("mlops:training",), "model = object()"),
    (("mlops:export",), "import joblib\njoblib.dump(model, MODEL_OUTPUT_PATH)"),
]


def notebook(config: str = CONFIG, *extra: tuple[tuple[str, ...], str]) -> nbformat.NotebookNode:
    return read_notebook(build_notebook([(("mlops:config",), config), *BODY, *extra]))


def violations(nb: nbformat.NotebookNode) -> list[str]:
    with pytest.raises(ContractViolation) as caught:
        check_notebook(nb, default_threshold=0.8)
    assert str(caught.value).startswith("notebook breaks the contract: ")
    return caught.value.violations


def test_a_valid_notebook_declares_model_version_params_gate_and_cells_to_run() -> None:
    nb = notebook(
        CONFIG, ((), "print('exploration')"), (("parameters",), 'MODEL_OUTPUT_PATH = "m"\nLR = 0.1')
    )
    contract = check_notebook(nb, default_threshold=0.75)
    assert contract.model_name == "churn" and contract.version == "1.2"
    assert contract.params == {"MODEL_NAME": "churn", "VERSION": "1.2", "N_TREES": 50, "LR": 0.1}
    assert contract.gate == GateSettings("accuracy", 0.75, "max")
    assert contract.run_cells == (0, 1, 2, 3, 5)


@pytest.mark.parametrize("path", sorted(NOTEBOOKS.glob("*.ipynb")), ids=lambda p: p.name)
def test_the_shipped_examples_keep_the_contract(path: Path) -> None:
    contract = check_notebook(read_notebook(path.read_bytes()), default_threshold=0.8)
    assert contract.model_name and contract.version == "1.0.0"


def test_the_regression_example_declares_its_own_gate() -> None:
    nb = read_notebook((NOTEBOOKS / "diabetes_regression.ipynb").read_bytes())
    gate = check_notebook(nb, default_threshold=0.8).gate
    assert gate == GateSettings("rmse", 70.0, "min")
    assert gate.passes(55.0) and gate.passes(70.0) and not gate.passes(70.1)


def test_a_gate_metric_named_like_an_error_defaults_to_lower_is_better() -> None:
    gate = check_notebook(
        notebook(CONFIG + '\nGATE_METRIC = "val_loss"'), default_threshold=0.5
    ).gate
    assert gate == GateSettings("val_loss", 0.5, "min")


def test_each_missing_required_tag_is_named() -> None:
    nb = read_notebook(
        build_notebook([(("mlops:config",), CONFIG), (("mlops:training",), "m = 1")])
    )
    found = violations(nb)
    assert "missing tag mlops:preprocessing (no code cell carries it)" in found
    assert "missing tag mlops:export (no code cell carries it)" in found
    assert not any("mlops:training" in v for v in found)


def test_a_tag_on_a_markdown_cell_does_not_count() -> None:
    nb = notebook()
    nb.cells[2] = nbformat.v4.new_markdown_cell("model", metadata={"tags": ["mlops:training"]})
    assert violations(nb) == ["missing tag mlops:training (no code cell carries it)"]


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        ('VERSION = "1"', ["MODEL_NAME is not set in the mlops:config cell"]),
        ('MODEL_NAME = "m"', ["VERSION is not set in the mlops:config cell"]),
        (
            'MODEL_NAME = "m" + "x"\nVERSION = "1"',
            ["MODEL_NAME must be a literal, not an expression"],
        ),
        ('MODEL_NAME = f"m{1}"\nVERSION = "1"', ["MODEL_NAME must be a literal, not an f-string"]),
        (
            'MODEL_NAME = name()\nVERSION = "1"',
            ["MODEL_NAME must be a literal, not a function call"],
        ),
        ('MODEL_NAME = 3\nVERSION = "1"', ["MODEL_NAME must be a string, not int"]),
        ('MODEL_NAME = "m"\nVERSION = ""', ["VERSION must be a non-empty string or number"]),
        (
            'MODEL_NAME = "../etc"\nVERSION = "1"',
            ["MODEL_NAME '../etc' is not a safe registry name"],
        ),
        ('MODEL_NAME = "a b"\nVERSION = "1"', ["MODEL_NAME 'a b' is not a safe registry name"]),
        (
            'MODEL_NAME = "m@prod"\nVERSION = "1"',
            ["MODEL_NAME 'm@prod' is not a safe registry name"],
        ),
        (
            'MODEL_NAME = "m"\nVERSION = "1"\nGATE_DIRECTION = "up"',
            ['GATE_DIRECTION must be "max" or "min"'],
        ),
        (
            'MODEL_NAME = "m"\nVERSION = "1"\nGATE_THRESHOLD = "high"',
            ["GATE_THRESHOLD must be a number"],
        ),
        (
            'MODEL_NAME = "m"\nVERSION = "1"\nGATE_METRIC = 5',
            ["GATE_METRIC must be a metric name string"],
        ),
        (
            'MODEL_NAME = "m"\nVERSION = "1"\nGATE_THRESHOLD = float("nan")',
            ["GATE_THRESHOLD must be a literal"],
        ),
        (
            'MODEL_NAME = "m"\nVERSION = (',
            ["syntax error in the mlops:config cell (cell 1, line 2)"],
        ),
    ],
)
def test_each_config_cell_problem_is_named(config: str, expected: list[str]) -> None:
    found = violations(notebook(config))
    assert len(found) == len(expected), found
    for message, prefix in zip(found, expected, strict=True):
        assert message.startswith(prefix), found


def test_several_violations_are_reported_together() -> None:
    nb = read_notebook(
        build_notebook(
            [
                (("mlops:config",), 'MODEL_NAME = "bad name"'),
                (("mlops:config",), 'VERSION = "2"'),
                (("mlops:trainig",), "typo"),
            ]
        )
    )
    found = violations(nb)
    assert "more than one cell is tagged mlops:config (cells 1, 2)" in found
    assert any(v.startswith("unknown tag mlops:trainig on cell 3") for v in found)
    assert any(v.startswith("MODEL_NAME 'bad name' is not a safe registry name") for v in found)
    assert "VERSION is not set in the mlops:config cell" in found
    assert sum(v.startswith("missing tag") for v in found) == 3


def test_the_config_cell_is_never_run() -> None:
    marker = Path("/tmp/mlops-contract-was-run")
    config = f'open("{marker}", "w")\nMODEL_NAME = "m"\nVERSION = "1"'
    check_notebook(notebook(config), default_threshold=0.8)
    assert not marker.exists()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (b"{not json", "not a valid notebook file"),
        (
            b'{"cells": [{"cell_type": "code", "metadata": {}}], "metadata": {}, '
            b'"nbformat": 4, "nbformat_minor": 5}',
            "not valid nbformat",
        ),
    ],
)
def test_a_file_that_is_not_a_notebook_is_named(text: bytes, expected: str) -> None:
    with pytest.raises(ContractViolation) as caught:
        read_notebook(text)
    assert caught.value.violations[0].startswith(expected)


def test_a_non_python_kernel_is_refused() -> None:
    nb = notebook()
    nb.metadata["kernelspec"] = {"name": "ir", "display_name": "R", "language": "R"}
    assert violations(nb) == ["kernel language 'R' is not supported (Python only)"]


def test_preparation_skips_untagged_code_cells_and_is_undone_on_the_executed_copy() -> None:
    nb = notebook(CONFIG, ((), "print('explore')"), (("hide-input",), "plot()"))
    prepared = prepare_for_execution(nb)
    skipped = [i for i, c in enumerate(prepared.cells) if SKIP_TAG in c.metadata.get("tags", [])]
    assert skipped == [4, 5]
    assert [c.metadata["mlops_index"] for c in prepared.cells] == list(range(6))
    assert "mlops_index" not in nb.cells[0].metadata  # the original is untouched
    restored = strip_execution_marks(prepared)
    assert [c.metadata for c in restored.cells] == [c.metadata for c in nb.cells]


def test_the_experiment_a_run_cell_names_is_read_without_running_it() -> None:
    nb = notebook(
        CONFIG,
        ((), 'mlflow.set_experiment("exploration-only")'),
        (("mlops:data",), "%matplotlib inline"),
        (("mlops:evaluation",), 'import mlflow\nmlflow.set_experiment(experiment_name="team")'),
    )
    assert check_notebook(nb, default_threshold=0.8).experiment_name == "team"
    assert check_notebook(notebook(CONFIG), default_threshold=0.8).experiment_name is None


def test_cell_ids_under_an_older_nbformat_minor_are_accepted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Regression: VS Code-style files (nbformat 4.2 with cell ids) failed as "not valid nbformat".

    Jupyter opens them; the ids are what 4.5 added, so the file is read as 4.5 and both the
    contract check and the copy handed to papermill validate. Reading one no longer logs
    nbformat's "Notebook JSON is invalid" error in the worker's log (found by the corpus).
    """
    raw = json.loads(build_notebook([(("mlops:config",), CONFIG), *BODY]))
    raw["nbformat_minor"] = 2
    for i, cell in enumerate(raw["cells"][:-1]):  # the last cell has no id
        cell["id"] = f"cell-{i}"
    text = json.dumps(raw)
    with pytest.raises(nbformat.ValidationError):
        nbformat.validate(nbformat.reads(text, as_version=4))

    caplog.clear()
    nb = read_notebook(text)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert check_notebook(nb, default_threshold=0.8).model_name == "churn"
    assert [c.id for c in nb.cells[:-1]] == ["cell-0", "cell-1", "cell-2"]
    prepared = prepare_for_execution(nbformat.reads(text, as_version=4))
    nbformat.validate(prepared)


def test_ipython_magics_in_the_config_cell_are_read_as_jupyter_reads_them() -> None:
    """Regression: `%matplotlib inline` above the literals was a "syntax error" in the config."""
    contract = check_notebook(
        notebook('%matplotlib inline\n!nvidia-smi\nMODEL_NAME = "churn"\nVERSION = "2"'),
        default_threshold=0.8,
    )
    assert (contract.model_name, contract.version) == ("churn", "2")
    assert violations(notebook('%matplotlib inline\nMODEL_NAME = ("churn"\nVERSION = "2"')) == [
        "syntax error in the mlops:config cell (cell 1, line 2): '(' was never closed"
    ]


def test_the_untagged_cells_defining_a_name_are_found() -> None:
    nb = notebook(
        CONFIG,
        ((), "%matplotlib inline\nimport numpy as np\nimport sklearn.linear_model"),
        ((), "def load():\n    return 1\nfor row_id in []:\n    pass"),
        (("mlops:data",), "import pandas as pd"),
    )
    assert skipped_cells_defining(nb, "np") == [4]
    assert skipped_cells_defining(nb, "sklearn") == [4]
    assert skipped_cells_defining(nb, "load") == [5]
    assert skipped_cells_defining(nb, "row_id") == [5]
    assert skipped_cells_defining(nb, "pd") == []  # defined in a tagged cell: it runs


def test_a_tagged_cell_that_installs_packages_is_refused_pointing_at_requirements_txt() -> None:
    """It could never work (the kernel's environment is read-only, with no network) and would
    fail late and obscurely; an untagged cell doing it (Colab's first cell) is skipped anyway."""
    nb = notebook(
        CONFIG,
        ((), "!pip install xgboost"),
        (("mlops:data",), "%pip install -q seaborn tabulate\nimport seaborn"),
    )
    [problem] = violations(nb)
    assert problem.startswith("cell 6 installs packages itself (`%pip install -q seaborn tabulate`")
    assert "list the packages in requirements.txt beside the notebook" in problem
